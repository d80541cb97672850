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
// # Exactly once
//
// Every append records in its snapshot summary the buffer (PropBufferID) and the event IDs it wrote
// (PropEventIDs, PropMaxEventID). Before appending, a write drops the changes whose event IDs a snapshot on
// the table's current branch already holds for the same buffer, so events the buffer hands out again after a
// crash between the Iceberg commit and the buffer commit are not written twice, however they are regrouped.
// Commits are compare-and-swap on the table's current snapshot: a concurrent append by another writer makes
// the commit fail, and the write reloads the table, checks for duplicates again and retries with backoff.
// The library's own refresh-and-replay retry is disabled on the tables this package creates, because a
// replay would skip the duplicate check. A retry commits the data files it already wrote when the pending
// changes and the schema are unchanged; otherwise the earlier files stay behind as orphans (deleting them is
// unsafe while the earlier commit's state is unknown), for an orphan-file clean-up to remove.
//
// The check reads the snapshots in the table metadata, so snapshot expiry must keep snapshots longer than
// the buffer can take to hand events out again.
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
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
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
	// Warehouse is where table data and metadata go: "file:///path" or "s3://bucket/prefix". With a REST
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
	// BufferID identifies the buffer database instance whose event IDs are recorded; required.
	BufferID string
	// Properties are passed to the catalog and its file IO: S3 endpoint, keys, region, REST credentials.
	Properties map[string]string
	// Logger receives commit retries and table creations. Default slog.Default().
	Logger *slog.Logger
	// MaxCommitAttempts bounds the attempts of one table's append under conflicts. Default 10.
	MaxCommitAttempts int
}

// validate checks the settings and reports every bad one at once.
func (c *Config) validate() error {
	var errs []error
	switch u, err := url.Parse(c.Warehouse); {
	case c.Warehouse == "":
		errs = append(errs, errors.New("Warehouse: required"))
	case err != nil:
		errs = append(errs, fmt.Errorf("Warehouse: %w", err))
	case u.Scheme != "file" && u.Scheme != "s3":
		errs = append(errs, fmt.Errorf("Warehouse: %q: want file:///path or s3://bucket/prefix", c.Warehouse))
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
	if c.BufferID == "" {
		errs = append(errs, errors.New("BufferID: required"))
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

	mu     sync.Mutex // guards tables
	tables map[sourceTable]*tableState

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

// New validates cfg, opens the catalog and checks that the warehouse's file IO is available.
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
	if _, err := iceio.LoadFS(ctx, props, cfg.Warehouse); err != nil {
		return nil, fmt.Errorf("iceberg sink: Warehouse %q: %w", cfg.Warehouse, err)
	}

	s := &Sink{
		cfg:       cfg,
		namespace: strings.Split(cfg.Namespace, "."),
		mem:       memory.DefaultAllocator,
		log:       cfg.Logger,
		tables:    map[sourceTable]*tableState{},
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

// Write appends the batch's changes, one commit per table. Changes already written by an earlier delivery
// of the same events are skipped. When Write returns nil every change of the batch is committed to Iceberg.
func (s *Sink) Write(ctx context.Context, batch []change.TableChanges) error {
	for i := range batch {
		tc := &batch[i]
		if len(tc.Changes) == 0 {
			continue
		}
		if err := s.writeTable(ctx, tc); err != nil {
			return err
		}
	}
	return nil
}

// sourceTable identifies a source table. Two source tables may map to the same Iceberg table name; each gets
// its own tableState, and the second one's load fails the source check.
type sourceTable struct{ schema, name string }

func (s *Sink) state(t change.Table) *tableState {
	key := sourceTable{t.Schema, t.Name}
	s.mu.Lock()
	defer s.mu.Unlock()
	ts, ok := s.tables[key]
	if !ok {
		ident := append(table.Identifier{}, s.namespace...)
		ident = append(ident, t.Schema+"_"+t.Name)
		ts = &tableState{ident: ident, name: strings.Join(ident, ".")}
		s.tables[key] = ts
	}
	return ts
}

func (s *Sink) writeTable(ctx context.Context, tc *change.TableChanges) error {
	ts := s.state(tc.Table)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if err := s.writeTableLocked(ctx, ts, tc); err != nil {
		return fmt.Errorf("iceberg table %s (source %s.%s): %w", ts.name, tc.Table.Schema, tc.Table.Name, err)
	}
	return nil
}

func (s *Sink) writeTableLocked(ctx context.Context, ts *tableState, tc *change.TableChanges) error {
	if ts.tbl == nil {
		tbl, err := s.loadOrCreate(ctx, ts, tc.Table)
		if err != nil {
			return err
		}
		ts.tbl = tbl
	}
	minID, maxID := tc.Changes[0].EventID, tc.Changes[0].EventID
	for i := range tc.Changes {
		minID, maxID = min(minID, tc.Changes[i].EventID), max(maxID, tc.Changes[i].EventID)
	}

	var files dataFiles
	for attempt := 1; ; attempt++ {
		err := s.tryAppend(ctx, ts, tc, minID, maxID, &files)
		var ce *commitError
		if err == nil || ctx.Err() != nil || !errors.As(err, &ce) {
			return err // done, cancelled, or failed before committing (bad value, I/O): retrying won't help
		}
		fresh, lerr := s.cat.LoadTable(ctx, ts.ident)
		if lerr != nil {
			return errors.Join(err, fmt.Errorf("reload after failed commit: %w", lerr))
		}
		moved := fresh.MetadataLocation() != ts.tbl.MetadataLocation()
		ts.tbl = fresh
		// Retry a conflict, or any failure after which the table moved (perhaps by this very commit, when the
		// catalog reported an error after accepting it): the retry checks for duplicates again, so it is safe.
		if !errors.Is(err, table.ErrCommitFailed) && !moved {
			return err
		}
		if attempt >= s.cfg.MaxCommitAttempts {
			return fmt.Errorf("gave up after %d commit attempts: %w", attempt, err)
		}
		s.log.LogAttrs(ctx, slog.LevelDebug, "iceberg commit conflict, retrying",
			slog.String("table", ts.name), slog.Int("attempt", attempt), slog.Any("err", err))
		if err := backoff(ctx, attempt); err != nil {
			return err
		}
	}
}

// commitError marks a failed catalog commit, the failure that a retry on the reloaded table may overcome.
type commitError struct{ err error }

func (e *commitError) Error() string { return e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }

// dataFiles are the data files written for one attempt, kept so that a retry after a commit conflict can
// commit them again instead of rewriting them, when the pending changes and the schema are unchanged.
type dataFiles struct {
	schemaID int
	pending  int // number of pending changes; pending changes only shrink between attempts
	files    []iceberg.DataFile
}

// tryAppend makes one attempt: add the source's new columns if any, drop the changes already written and
// append the rest in one snapshot. prev holds the previous attempt's data files, if any.
func (s *Sink) tryAppend(ctx context.Context, ts *tableState, tc *change.TableChanges, minID, maxID int64, prev *dataFiles) error {
	if add, promote := schemaChanges(ts.tbl.Schema(), tc.Table); len(add)+len(promote) > 0 {
		if err := s.evolveSchema(ctx, ts, add, promote); err != nil {
			return err
		}
	}

	written, err := writtenRanges(ts.tbl.Metadata(), s.cfg.BufferID, minID, maxID)
	if err != nil {
		return fmt.Errorf("read written event IDs: %w", err)
	}
	pending := pendingChanges(tc.Changes, written)
	if skipped := len(tc.Changes) - len(pending); skipped > 0 {
		s.log.LogAttrs(ctx, slog.LevelInfo, "skipping changes already written to iceberg",
			slog.String("table", ts.name), slog.Int("skipped", skipped), slog.Int("pending", len(pending)))
	}
	if len(pending) == 0 {
		return nil
	}

	sc := ts.tbl.Schema()
	if prev.files == nil || prev.schemaID != sc.ID || prev.pending != len(pending) {
		// Files of an earlier attempt that no longer fit stay behind as orphans: deleting them is unsafe
		// while that attempt's commit state is unknown.
		files, err := s.writeDataFiles(ctx, ts, tc.Table, pending)
		if err != nil {
			return err
		}
		*prev = dataFiles{schemaID: sc.ID, pending: len(pending), files: files}
	}

	txn := ts.tbl.NewTransaction()
	// The files are new, so the duplicate path check (a scan of every manifest) is pointless.
	err = txn.AddDataFiles(ctx, prev.files, summaryProps(s.cfg.BufferID, pending),
		table.WithoutDuplicateCheck(), table.WithoutAutoNameMapping())
	if err != nil {
		return fmt.Errorf("add data files: %w", err)
	}
	tbl, err := txn.Commit(ctx)
	if err != nil {
		return &commitError{fmt.Errorf("commit append: %w", err)}
	}
	ts.tbl = tbl
	return nil
}

// writeDataFiles writes the changes to Parquet data files of the table's current schema.
func (s *Sink) writeDataFiles(ctx context.Context, ts *tableState, src change.Table, pending []change.Change) ([]iceberg.DataFile, error) {
	sc := ts.tbl.Schema()
	if ts.writer == nil || ts.writer.schemaID != sc.ID {
		if ts.writer != nil {
			ts.writer.release()
			ts.writer = nil
		}
		w, err := newRecordWriter(s.mem, sc)
		if err != nil {
			return nil, err
		}
		ts.writer = w
	}
	rec, err := ts.writer.build(src, pending)
	if err != nil {
		return nil, err
	}
	defer rec.Release()
	records := func(yield func(arrow.RecordBatch, error) bool) {
		rec.Retain() // WriteRecords releases what it consumes
		yield(rec, nil)
	}
	var files []iceberg.DataFile
	for df, err := range table.WriteRecords(ctx, ts.tbl, ts.writer.schema, records) {
		if err != nil {
			return nil, fmt.Errorf("write data files: %w", err)
		}
		files = append(files, df)
	}
	return files, nil
}

// summaryProps records the appended events in the snapshot summary.
func summaryProps(bufferID string, changes []change.Change) iceberg.Properties {
	ids := make([]int64, len(changes))
	var maxLSN uint64
	for i := range changes {
		ids[i] = changes[i].EventID
		maxLSN = max(maxLSN, changes[i].CommitLSN)
	}
	rs := toRanges(ids)
	return iceberg.Properties{
		PropBufferID:     bufferID,
		PropEventIDs:     formatRanges(rs),
		PropMaxEventID:   strconv.FormatInt(rs[len(rs)-1].hi, 10),
		PropMaxCommitLSN: strconv.FormatUint(maxLSN, 10),
	}
}

// evolveSchema adds the source's new columns to the table, as optional columns, and widens the types of
// the promoted ones.
func (s *Sink) evolveSchema(ctx context.Context, ts *tableState, add, promote []change.Column) error {
	txn := ts.tbl.NewTransaction()
	us := txn.UpdateSchema(true, false)
	var added, promoted []string
	for _, c := range add {
		if isChangeColumn(c.Name) {
			return fmt.Errorf("source column %q clashes with a change column of the same name", c.Name)
		}
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
		return fmt.Errorf("schema update (add %v, widen %v): %w", added, promoted, err)
	}
	tbl, err := txn.Commit(ctx)
	if err != nil {
		return &commitError{fmt.Errorf("commit schema update (add %v, widen %v): %w", added, promoted, err)}
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
	tbl, err = s.cat.CreateTable(ctx, ts.ident, sc, catalog.WithProperties(iceberg.Properties{
		propSourceSchema: src.Schema,
		propSourceTable:  src.Name,
		// No refresh-and-replay inside the library: it would skip the duplicate check. Write retries instead.
		table.CommitNumRetriesKey: "0",
		// One metadata file per commit adds up; keep the last few.
		table.MetadataDeleteAfterCommitEnabledKey: "true",
	}))
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
		return fmt.Errorf("table was created for source table %s.%s: name collision", schema, name)
	}
	if n := p.GetInt(table.CommitNumRetriesKey, 0); n != 0 {
		return fmt.Errorf("table property %s is %d: must be 0 for exactly-once appends", table.CommitNumRetriesKey, n)
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

// backoff waits before retry attempt n (1-based): exponential from 50ms, capped at 2s, with full jitter.
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
