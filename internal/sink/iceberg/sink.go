// Package iceberg writes decoded changes to Apache Iceberg tables, one table per source table, exactly once.
//
// # Tables
//
// A source table schema.name becomes the Iceberg table <Namespace>.<schema>_<name> (Namespace may be dotted
// for a nested namespace). It is created on first sight with the source columns, all optional, followed by
// the change columns _op (insert, update, delete, truncate), _lsn, _commit_lsn, _seq and _commit_time. The
// source schema and table names are stored as table properties and checked on load, so two source tables
// whose names collide after joining with "_" fail loudly instead of sharing a table. Columns added at the
// source are added to the Iceberg table before the batch is written.
//
// # Writers and a committer
//
// Processors in every replica call Prepare and WriteFiles: they write Parquet data files named with a write
// UUID and commit nothing. The worker records the encoded files in the buffer, in the transaction that
// deletes their events. One committer per source calls Committed and Commit: it adds every recorded file of
// a table in one snapshot per interval, however many writers there are, and sets the table property
// PropCommittedSeq to the commit's sequence number in the same metadata commit. Exactly once therefore rests
// on the current table metadata only, never on snapshot history, so Maintain can expire snapshots, rewrite
// manifests and compact data files freely. The library's own refresh-and-replay retry is disabled on the
// tables this package creates: a conflict is reported (ErrConflict) and the committer decides what to retry
// from the committed sequence number.
//
// # Types
//
// Values arrive in PostgreSQL's text format. bool is boolean; int2 and int4 are int; int8 is long; float4 is
// float; float8 is double (NaN and infinities kept); numeric(p,s) with p <= 38 is decimal(p,s) and other
// numerics are string; date, time, timestamp and timestamptz are the Iceberg types of the same names; uuid is
// uuid; bytea is binary; text, varchar, bpchar, name, json, jsonb and every other type (arrays, enums, inet,
// interval...) are the string of the text form. Values Iceberg cannot hold (numeric NaN and infinities, date
// and timestamp infinities) are written as nulls, as are unchanged TOASTed values and the data columns of
// truncate rows. A source type widened to int8, float8 or a larger decimal precision widens the Iceberg
// column; other source type changes leave the column as it is, and values that no longer parse fail the
// write, naming the column and event.
package iceberg

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	_ "github.com/apache/iceberg-go/catalog/rest" // registers the "rest" catalog type
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	iceio "github.com/apache/iceberg-go/io"
	_ "github.com/apache/iceberg-go/io/gocloud/s3" // registers the s3:// warehouse scheme
	"github.com/apache/iceberg-go/table"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/philotes/philotes-worker/internal/change"
)

// Table properties set on the tables this package creates.
const (
	propSourceSchema = "philotes.source-schema"
	propSourceTable  = "philotes.source-table"
)

// Config configures a Sink.
type Config struct {
	// Warehouse is where table data and metadata go: "file:///path" or "s3://bucket/prefix" (see CheckWarehouse). With a REST
	// catalog, Properties["warehouse"], when set, is sent to the catalog instead (e.g. a Lakekeeper warehouse
	// name).
	Warehouse string
	// CatalogURI selects the catalog: "" for a SQL catalog kept in the buffer database (BufferURL), or the
	// http(s) URL of a REST catalog such as Lakekeeper.
	CatalogURI string
	// BufferURL is the PostgreSQL URL of the buffer database; required when CatalogURI is "".
	BufferURL string
	// CatalogName names the catalog (the SQL catalog's catalog_name; the REST catalog's client name).
	// Default "philotes".
	CatalogName string
	// Namespace holds the tables; dots make a nested namespace. Default "philotes".
	Namespace string
	// Properties are passed to the catalog and its file IO: S3 endpoint, keys, region, REST credentials.
	Properties map[string]string
	// Logger receives commit retries and table creations. Default slog.Default().
	Logger *slog.Logger
	// MaxCommitAttempts bounds the attempts of a writer's schema change under conflicts. Default 10.
	MaxCommitAttempts int
	// Maintenance configures Maintain.
	Maintenance MaintenanceConfig
}

// validate checks the settings and reports every bad one at once.
func (c *Config) validate() error {
	var errs []error
	if err := CheckWarehouse(c.Warehouse); err != nil {
		errs = append(errs, fmt.Errorf("Warehouse: %q: %w", c.Warehouse, err))
	}
	switch {
	case c.CatalogURI == "":
		if c.BufferURL == "" {
			errs = append(errs, errors.New("BufferURL: required for the SQL catalog (CatalogURI empty)"))
		} else if _, err := pgx.ParseConfig(c.BufferURL); err != nil {
			errs = append(errs, fmt.Errorf("BufferURL: %w", err))
		}
	case !strings.HasPrefix(c.CatalogURI, "http://") && !strings.HasPrefix(c.CatalogURI, "https://"):
		errs = append(errs, fmt.Errorf("CatalogURI: %q: want empty (SQL catalog in the buffer database) or http(s)://", c.CatalogURI))
	}
	if c.MaxCommitAttempts < 0 {
		errs = append(errs, errors.New("MaxCommitAttempts: must not be negative"))
	}
	return errors.Join(errs...)
}

func (c *Config) setDefaults() {
	if c.CatalogName == "" {
		c.CatalogName = "philotes"
	}
	if c.Namespace == "" {
		c.Namespace = "philotes"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxCommitAttempts == 0 {
		c.MaxCommitAttempts = 10
	}
	c.Maintenance.setDefaults()
}

// Sink writes change batches to Iceberg tables. It is safe for concurrent use; writes to the same table
// through one Sink are serialised.
type Sink struct {
	cfg       Config
	namespace table.Identifier
	cat       catalog.Catalog
	db        *sql.DB // the SQL catalog's database, nil for a REST catalog
	mem       memory.Allocator
	log       *slog.Logger

	props iceberg.Properties // catalog and file IO properties

	mu         sync.Mutex // guards tables and committing
	tables     map[sourceTable]*tableState
	committing map[string]*table.Table // the committer's view, by table name

	nsMu sync.Mutex // guards nsOK; taken with a tableState's mu held
	nsOK bool
}

// tableState is a Sink's cached view of one Iceberg table.
type tableState struct {
	mu     sync.Mutex
	ident  table.Identifier
	name   string // dotted identifier, for errors and logs
	tbl    *table.Table
	writer *recordWriter
}

// New validates cfg, opens the catalog and, with the SQL catalog, checks that the warehouse takes writes (an
// error wrapping ErrWarehouse when the configuration must change).
func New(ctx context.Context, cfg Config) (*Sink, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("iceberg sink config: %w", err)
	}
	props := iceberg.Properties{}
	for k, v := range cfg.Properties {
		props[k] = v
	}
	if cfg.CatalogURI == "" || props["warehouse"] == "" {
		// A REST catalog may name its warehouse differently (Lakekeeper takes a warehouse name): a
		// "warehouse" property then wins.
		props["warehouse"] = cfg.Warehouse
	}
	if cfg.CatalogURI == "" {
		// With a REST catalog the catalog says where tables live (and may vend their credentials).
		if err := probeWarehouse(ctx, props, cfg.Warehouse); err != nil {
			return nil, fmt.Errorf("iceberg sink: %w", err)
		}
	} else if _, err := iceio.LoadFS(ctx, props, cfg.Warehouse); err != nil {
		return nil, fmt.Errorf("iceberg sink: Warehouse %q: %w", cfg.Warehouse, err)
	}

	s := &Sink{
		cfg:        cfg,
		namespace:  strings.Split(cfg.Namespace, "."),
		mem:        memory.DefaultAllocator,
		log:        cfg.Logger,
		props:      props,
		tables:     map[sourceTable]*tableState{},
		committing: map[string]*table.Table{},
	}
	if cfg.CatalogURI == "" {
		pcfg, err := pgx.ParseConfig(cfg.BufferURL)
		if err != nil {
			return nil, fmt.Errorf("iceberg sink: BufferURL: %w", err)
		}
		s.db = stdlib.OpenDB(*pcfg)
		if err := s.db.PingContext(ctx); err != nil {
			s.db.Close()
			return nil, fmt.Errorf("iceberg sink: SQL catalog in BufferURL: %w", err)
		}
		// NewCatalog creates the iceberg_tables and iceberg_namespace_properties tables if missing. Replicas
		// starting together can collide on that (CREATE TABLE IF NOT EXISTS is not concurrency-safe in
		// PostgreSQL); the loser's second attempt finds the tables.
		var cat *sqlcat.Catalog
		for attempt := 1; ; attempt++ {
			cat, err = sqlcat.NewCatalog(cfg.CatalogName, s.db, sqlcat.Postgres, props)
			if err == nil || attempt == 3 || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			s.db.Close()
			return nil, fmt.Errorf("iceberg sink: SQL catalog in BufferURL: %w", err)
		}
		s.cat = cat
	} else {
		props["type"] = "rest"
		props["uri"] = cfg.CatalogURI
		cat, err := catalog.Load(ctx, cfg.CatalogName, props)
		if err != nil {
			return nil, fmt.Errorf("iceberg sink: REST catalog at CatalogURI %q: %w", cfg.CatalogURI, err)
		}
		s.cat = cat
	}
	return s, nil
}

// Close releases the catalog and the record builders.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ts := range s.tables {
		ts.mu.Lock()
		if ts.writer != nil {
			ts.writer.release()
			ts.writer = nil
		}
		ts.mu.Unlock()
	}
	var errs []error
	if c, ok := s.cat.(catalog.Closer); ok {
		errs = append(errs, c.Close())
	}
	if s.db != nil {
		errs = append(errs, s.db.Close())
	}
	return errors.Join(errs...)
}

// evolveSchema adds the source's new columns to the table, as optional columns, and widens the types of
// the promoted ones.
func (s *Sink) evolveSchema(ctx context.Context, ts *tableState, add, promote []change.Column) error {
	txn := ts.tbl.NewTransaction()
	us := txn.UpdateSchema(true, false)
	var added, promoted []string
	for _, c := range add { // checkColumns has refused change column names
		us.AddColumn([]string{c.Name}, icebergType(c), "", false, nil)
		added = append(added, c.Name)
	}
	for _, c := range promote {
		us.UpdateColumn([]string{c.Name}, table.ColumnUpdate{
			FieldType: iceberg.Optional[iceberg.Type]{Valid: true, Val: icebergType(c)},
		})
		promoted = append(promoted, c.Name)
	}
	if err := us.Commit(); err != nil {
		return change.Unwritable(fmt.Errorf("schema update (add %v, widen %v): %w", added, promoted, err))
	}
	if _, err := txn.Commit(ctx); err != nil {
		return &commitError{fmt.Errorf("commit schema update (add %v, widen %v): %w", added, promoted, err)}
	}
	// Load the table afresh rather than keep what Commit returned: that holds every earlier version of the
	// metadata (see Commit).
	tbl, err := s.cat.LoadTable(ctx, ts.ident)
	if err != nil {
		return fmt.Errorf("reload after schema update: %w", err)
	}
	ts.tbl = tbl
	s.log.LogAttrs(ctx, slog.LevelInfo, "evolved iceberg table schema", slog.String("table", ts.name),
		slog.Any("added", added), slog.Any("widened", promoted))
	return nil
}

// loadOrCreate loads the table, creating the namespace and the table when missing (racing writers are fine:
// the loser loads the winner's table).
func (s *Sink) loadOrCreate(ctx context.Context, ts *tableState, src change.Table) (*table.Table, error) {
	tbl, err := s.cat.LoadTable(ctx, ts.ident)
	switch {
	case err == nil:
		return tbl, checkSource(tbl, src)
	case !errors.Is(err, catalog.ErrNoSuchTable) && !errors.Is(err, catalog.ErrNoSuchNamespace):
		return nil, fmt.Errorf("load: %w", err)
	}
	if err := s.ensureNamespace(ctx); err != nil {
		return nil, err
	}
	sc, err := newTableSchema(src)
	if err != nil {
		return nil, err
	}
	props := s.tableProperties()
	props[propSourceSchema] = src.Schema
	props[propSourceTable] = src.Name
	tbl, err = s.cat.CreateTable(ctx, ts.ident, sc, catalog.WithProperties(props))
	if errors.Is(err, catalog.ErrTableAlreadyExists) {
		tbl, err = s.cat.LoadTable(ctx, ts.ident)
		if err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		return tbl, checkSource(tbl, src)
	}
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "created iceberg table", slog.String("table", ts.name))
	return tbl, nil
}

// checkSource refuses a table created for a different source table whose name maps to the same identifier.
func checkSource(tbl *table.Table, src change.Table) error {
	p := tbl.Properties()
	schema, okS := p[propSourceSchema]
	name, okN := p[propSourceTable]
	if okS && okN && (schema != src.Schema || name != src.Name) {
		return change.Unwritable(fmt.Errorf("table was created for source table %s.%s: name collision", schema, name))
	}
	if n := p.GetInt(table.CommitNumRetriesKey, 0); n != 0 {
		return change.Unwritable(fmt.Errorf("table property %s is %d: must be 0 for exactly-once commits", table.CommitNumRetriesKey, n))
	}
	return nil
}

func (s *Sink) ensureNamespace(ctx context.Context) error {
	s.nsMu.Lock()
	defer s.nsMu.Unlock()
	if s.nsOK {
		return nil
	}
	err := s.cat.CreateNamespace(ctx, s.namespace, nil)
	if err != nil && !errors.Is(err, catalog.ErrNamespaceAlreadyExists) {
		return fmt.Errorf("create namespace %s: %w", strings.Join(s.namespace, "."), err)
	}
	s.nsOK = true
	return nil
}

// backoff waits before retry attempt n (1-based): exponential from 50ms, capped at 2s, with equal jitter (half
// fixed, half random).
func backoff(ctx context.Context, n int) error {
	d := min(50*time.Millisecond<<min(n-1, 6), 2*time.Second)
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// catalogTables are the tables iceberg-go's SQL catalog keeps in the public schema of its database (the buffer
// database).
var catalogTables = []string{"iceberg_tables", "iceberg_namespace_properties"}

// IsCatalogTable reports whether schema.table is one of the SQL catalog's own tables.
func IsCatalogTable(schema, table string) bool {
	return schema == "public" && slices.Contains(catalogTables, table)
}
