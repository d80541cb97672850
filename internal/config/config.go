// Package config reads the worker's settings from flags and PHILOTES_* environment variables. One parse reports
// every bad setting at once, each naming the variable and the fix.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/philotes/philotes-worker/internal/sink/iceberg"
)

// Mode is what the process does.
type Mode string

// The modes.
const (
	// Run competes for the reader role and runs processors until stopped.
	Run Mode = "run"
	// Drain runs processors only and exits once the buffer is empty.
	Drain Mode = "drain"
	// Backfill (re)starts the backfill of chosen tables, reads their chunks and exits once they are done.
	Backfill Mode = "backfill"
)

// Config is the worker's complete configuration.
type Config struct {
	Mode Mode

	SourceURL   string
	BufferURL   string
	SourceName  string
	Slot        string
	Publication string
	Tables      []string

	// Backfill registers tables the reader sees for the first time for a backfill of their existing rows.
	Backfill bool
	// BackfillTables are the tables the backfill command backfills.
	BackfillTables []string
	// BackfillWorkers, BackfillChunkRows and BackfillMaxRowsPerSecond shape the backfill on each replica.
	BackfillWorkers          int
	BackfillChunkRows        int
	BackfillMaxRowsPerSecond int

	NoReader   bool
	Processors int
	BatchSize  int
	// MaxEventsPerSecond caps what one processor writes per second (0: no cap).
	MaxEventsPerSecond int

	FlushInterval       time.Duration
	StatusInterval      time.Duration
	ReaderRetryInterval time.Duration
	StatsInterval       time.Duration
	IdlePollInterval    time.Duration
	ShutdownTimeout     time.Duration

	IcebergWarehouse   string
	IcebergCatalogURI  string
	IcebergCatalogName string
	IcebergNamespace   string
	// The committer and table maintenance.
	CommitInterval      time.Duration
	CommitBytes         int
	SnapshotRetention   time.Duration
	SnapshotsToKeep     int
	MaintenanceInterval time.Duration
	TargetFileBytes     int
	// IcebergProperties are passed to the catalog and file IO (S3 endpoint, keys, REST token).
	IcebergProperties map[string]string

	HTTPAddr  string
	LogLevel  slog.Level
	LogFormat string
}

// Usage is printed for -h and on a bad command.
const Usage = `usage: philotes-worker run|drain|backfill [flags]

  run       hold or wait for the slot's reader role and process the buffer until SIGTERM
  drain     process the buffer until it is empty, then exit 0 (no reader)
  backfill  --tables schema.t1,schema.t2: copy the tables' existing rows again (through the buffer, like
            changes), then exit 0; the run replicas' reader and processors must be up

Every flag can also be set by its PHILOTES_* environment variable (shown in brackets); flags win.
`

// simpleName is what slot and publication names must be: pgoutput and the replication protocol read them unquoted.
var simpleName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Parse reads args (without the program name) and the environment given by getenv.
func Parse(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprint(stderr, Usage)
			return Config{}, flag.ErrHelp
		}
		return Config{}, errors.New("a command is required: philotes-worker run, drain or backfill")
	}
	var c Config
	switch Mode(args[0]) {
	case Run, Drain, Backfill:
		c.Mode = Mode(args[0])
	default:
		return Config{}, fmt.Errorf("unknown command %q: use philotes-worker run, drain or backfill", args[0])
	}

	fs := flag.NewFlagSet("philotes-worker "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, Usage); fs.PrintDefaults() }
	var errs []error
	var v raw
	define(fs, &c, &v, getenv, &errs)

	if err := fs.Parse(args[1:]); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q: settings are flags (--name value) or PHILOTES_* variables", fs.Args()))
	}

	if c.BufferURL == "" {
		c.BufferURL = c.SourceURL
	}
	if c.SourceName == "" {
		c.SourceName = c.Slot
	}
	if c.Mode == Drain || c.Mode == Backfill {
		c.NoReader = true
	}
	if c.Mode == Backfill {
		c.Processors = 0 // the run replicas write the rows to the lake
	}
	switch v.backfill {
	case "auto":
		c.Backfill = true
	case "off":
	default:
		errs = append(errs, fmt.Errorf("PHILOTES_BACKFILL=%q: use auto or off", v.backfill))
	}
	c.IcebergProperties = map[string]string{}
	for k, val := range map[string]string{"s3.endpoint": v.s3Endpoint, "s3.region": v.s3Region,
		"s3.access-key-id": v.s3Key, "s3.secret-access-key": v.s3Secret, "s3.session-token": v.s3Token,
		"token": v.catalogToken, "warehouse": v.catalogWarehouse} {
		if val != "" {
			c.IcebergProperties[k] = val
		}
	}
	switch v.s3PathStyle {
	case "auto":
	case "true", "false":
		c.IcebergProperties["s3.force-virtual-addressing"] = strconv.FormatBool(v.s3PathStyle == "false")
	default:
		errs = append(errs, fmt.Errorf("PHILOTES_S3_PATH_STYLE=%q: use true (http://endpoint/bucket/key, most S3-compatible servers), false (http://bucket.endpoint/key) or auto (true when PHILOTES_S3_ENDPOINT is set)", v.s3PathStyle))
	}
	if v.s3Endpoint != "" {
		if u, err := url.Parse(v.s3Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("PHILOTES_S3_ENDPOINT=%q: use an http(s):// URL such as https://s3.example.com or http://minio:9000", redactURL(v.s3Endpoint)))
		}
	}
	if (v.s3Key == "") != (v.s3Secret == "") {
		errs = append(errs, errors.New("PHILOTES_S3_ACCESS_KEY_ID and PHILOTES_S3_SECRET_ACCESS_KEY go together: set both, or neither to use the AWS SDK's default chain (AWS_* variables, web identity, instance role)"))
	}
	if v.catalogWarehouse != "" && c.IcebergCatalogURI == "" {
		errs = append(errs, errors.New("PHILOTES_ICEBERG_CATALOG_WAREHOUSE is for a REST catalog: set PHILOTES_ICEBERG_CATALOG_URI too, or leave it empty"))
	}
	c.Tables = tableList(v.tables, "PHILOTES_TABLES", &errs)
	c.BackfillTables = tableList(v.backfillTables, "--tables", &errs)
	if c.Mode == Backfill && len(c.BackfillTables) == 0 {
		errs = append(errs, errors.New("--tables is required: name the tables to backfill, e.g. philotes-worker backfill --tables public.orders,public.customers"))
	}
	if err := c.LogLevel.UnmarshalText([]byte(v.logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("PHILOTES_LOG_LEVEL=%q: use debug, info, warn or error", v.logLevel))
	}
	errs = append(errs, c.validate()...)
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// raw holds the settings that Parse checks and converts after the flags are parsed.
type raw struct {
	tables, backfillTables, backfill, logLevel, s3Endpoint, s3Region, s3PathStyle, s3Key, s3Secret, s3Token, catalogToken, catalogWarehouse string
}

// define registers every setting of c.Mode as a flag whose default comes from its PHILOTES_* variable: the one
// definition of the settings (name, variable, default, meaning) that Parse, -h and Settings read.
func define(fs *flag.FlagSet, c *Config, v *raw, getenv func(string) string, errs *[]error) {
	env := func(name, def string) string {
		if val := getenv(name); val != "" {
			return val
		}
		return def
	}
	str := func(p *string, flagName, envName, def, help string) {
		fs.StringVar(p, flagName, env(envName, def), help+" ["+envName+"]")
	}
	num := func(p *int, flagName, envName string, def int, help string) {
		fs.IntVar(p, flagName, fromEnv(getenv, errs, envName, def, strconv.Atoi, "must be a whole number"), help+" ["+envName+"]")
	}
	dur := func(p *time.Duration, flagName, envName string, def time.Duration, help string) {
		fs.DurationVar(p, flagName, fromEnv(getenv, errs, envName, def, time.ParseDuration, "must be a duration such as 500ms, 5s or 1m"), help+" ["+envName+"]")
	}
	boolean := func(p *bool, flagName, envName, help string) {
		fs.BoolVar(p, flagName, fromEnv(getenv, errs, envName, false, strconv.ParseBool, "must be true or false"), help+" ["+envName+"]")
	}

	str(&c.SourceURL, "source-url", "PHILOTES_SOURCE_URL", "", "source database URL (the user needs REPLICATION)")
	str(&c.BufferURL, "buffer-url", "PHILOTES_BUFFER_URL", "", "buffer database URL (default: the source URL; a separate database is recommended)")
	str(&c.SourceName, "source-name", "PHILOTES_SOURCE_NAME", "", "source label and buffer key (default: the slot name)")
	str(&c.Slot, "slot", "PHILOTES_SLOT", "philotes_cdc", "logical replication slot")
	str(&c.Publication, "publication", "PHILOTES_PUBLICATION", "philotes_pub", "publication")
	if c.Mode == Backfill {
		fs.StringVar(&v.backfillTables, "tables", "", "comma-separated schema.table list of the tables to backfill (required)")
		v.tables = getenv("PHILOTES_TABLES")
	} else {
		str(&v.tables, "tables", "PHILOTES_TABLES", "", "comma-separated schema.table list for a new publication (default: all tables)")
	}
	str(&v.backfill, "backfill", "PHILOTES_BACKFILL", "auto", "auto: backfill the existing rows of every published table the first time it is seen; off: only on request (philotes-worker backfill)")
	num(&c.BackfillWorkers, "backfill-workers", "PHILOTES_BACKFILL_WORKERS", 2, "backfill chunks this replica reads at once (0: none; other replicas still backfill)")
	num(&c.BackfillChunkRows, "backfill-chunk-rows", "PHILOTES_BACKFILL_CHUNK_ROWS", 10000, "rows per backfill chunk: one short read transaction on the source each")
	num(&c.BackfillMaxRowsPerSecond, "backfill-max-rows-per-second", "PHILOTES_BACKFILL_MAX_ROWS_PER_SECOND", 0, "cap on the rows this replica's backfill reads from the source per second (0: no cap)")
	boolean(&c.NoReader, "no-reader", "PHILOTES_NO_READER", "never take the reader role: process the buffer only")
	num(&c.Processors, "processors", "PHILOTES_PROCESSORS", 2, "buffer processors in this replica")
	num(&c.BatchSize, "batch-size", "PHILOTES_BATCH_SIZE", 5000, "events per buffer append and per processor claim")
	num(&c.MaxEventsPerSecond, "processor-max-events-per-second", "PHILOTES_PROCESSOR_MAX_EVENTS_PER_SECOND", 0, "cap on the events one processor writes per second, to spread a backlog's writes to the warehouse over time and let the autoscaler add replicas instead (0: no cap)")
	dur(&c.FlushInterval, "flush-interval", "PHILOTES_FLUSH_INTERVAL", 200*time.Millisecond, "longest a change waits in the reader before it is appended")
	dur(&c.StatusInterval, "status-interval", "PHILOTES_STATUS_INTERVAL", time.Second, "how often the reader confirms its position to the source")
	dur(&c.ReaderRetryInterval, "reader-retry-interval", "PHILOTES_READER_RETRY_INTERVAL", 2*time.Second, "how often a replica without the reader (or committer) role tries to take it")
	dur(&c.StatsInterval, "stats-interval", "PHILOTES_STATS_INTERVAL", 2*time.Second, "how often buffer depth and lag are read")
	dur(&c.IdlePollInterval, "idle-poll-interval", "PHILOTES_IDLE_POLL_INTERVAL", 500*time.Millisecond, "how often an idle processor looks for work")
	dur(&c.ShutdownTimeout, "shutdown-timeout", "PHILOTES_SHUTDOWN_TIMEOUT", 25*time.Second, "after SIGTERM, how long in-flight batches may take before they are released (keep below terminationGracePeriodSeconds)")
	str(&c.IcebergWarehouse, "iceberg-warehouse", "PHILOTES_ICEBERG_WAREHOUSE", "file:///var/lib/philotes/warehouse", "Iceberg warehouse: file:///path or s3://bucket/prefix")
	str(&c.IcebergCatalogURI, "iceberg-catalog-uri", "PHILOTES_ICEBERG_CATALOG_URI", "", "REST catalog URI (http/https); empty: SQL catalog in the buffer database")
	str(&c.IcebergCatalogName, "iceberg-catalog-name", "PHILOTES_ICEBERG_CATALOG_NAME", "philotes", "Iceberg catalog name")
	str(&c.IcebergNamespace, "iceberg-namespace", "PHILOTES_ICEBERG_NAMESPACE", "philotes", "Iceberg namespace for the tables")
	dur(&c.CommitInterval, "iceberg-commit-interval", "PHILOTES_ICEBERG_COMMIT_INTERVAL", 10*time.Second, "the committer commits each table's new data files at most once per interval (one snapshot per table per interval, however many replicas write)")
	num(&c.CommitBytes, "iceberg-commit-bytes", "PHILOTES_ICEBERG_COMMIT_BYTES", 128<<20, "commit sooner once this many bytes of data files wait for a commit")
	dur(&c.SnapshotRetention, "iceberg-snapshot-retention", "PHILOTES_ICEBERG_SNAPSHOT_RETENTION", time.Hour, "table maintenance expires snapshots older than this (time travel reaches back this far)")
	num(&c.SnapshotsToKeep, "iceberg-snapshots-to-keep", "PHILOTES_ICEBERG_SNAPSHOTS_TO_KEEP", 5, "snapshots every table keeps whatever their age")
	dur(&c.MaintenanceInterval, "iceberg-maintenance-interval", "PHILOTES_ICEBERG_MAINTENANCE_INTERVAL", 5*time.Minute, "how often the committer maintains each table that took commits: expire snapshots, compact small data files, rewrite manifests (0s turns maintenance off)")
	num(&c.TargetFileBytes, "iceberg-target-file-bytes", "PHILOTES_ICEBERG_TARGET_FILE_BYTES", 128<<20, "compaction merges small data files toward this size")
	str(&v.catalogToken, "iceberg-catalog-token", "PHILOTES_ICEBERG_CATALOG_TOKEN", "", "bearer token for the REST catalog")
	str(&v.catalogWarehouse, "iceberg-catalog-warehouse", "PHILOTES_ICEBERG_CATALOG_WAREHOUSE", "", "warehouse name sent to the REST catalog (e.g. a Lakekeeper warehouse); empty: PHILOTES_ICEBERG_WAREHOUSE")
	str(&v.s3Endpoint, "s3-endpoint", "PHILOTES_S3_ENDPOINT", "", "S3-compatible endpoint URL, e.g. http://minio:9000 (empty: AWS S3)")
	str(&v.s3Region, "s3-region", "PHILOTES_S3_REGION", "", "S3 region (empty: AWS_REGION or the SDK's default chain)")
	str(&v.s3PathStyle, "s3-path-style", "PHILOTES_S3_PATH_STYLE", "auto", "path-style addressing (http://endpoint/bucket/key): true, false (virtual-hosted: http://bucket.endpoint/key), or auto (path-style when PHILOTES_S3_ENDPOINT is set)")
	str(&v.s3Key, "s3-access-key-id", "PHILOTES_S3_ACCESS_KEY_ID", "", "S3 access key id (empty: the AWS SDK's default chain: AWS_* variables, web identity (IRSA), instance role)")
	str(&v.s3Secret, "s3-secret-access-key", "PHILOTES_S3_SECRET_ACCESS_KEY", "", "S3 secret access key")
	str(&v.s3Token, "s3-session-token", "PHILOTES_S3_SESSION_TOKEN", "", "S3 session token, with temporary keys")
	str(&c.HTTPAddr, "http-addr", "PHILOTES_HTTP_ADDR", ":8080", "address for /metrics, /healthz and /readyz")
	str(&v.logLevel, "log-level", "PHILOTES_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&c.LogFormat, "log-format", "PHILOTES_LOG_FORMAT", "json", "json or text")

}

// Setting is one setting as define registers it.
type Setting struct {
	Flag, Env, Default, Help string
}

// Settings lists the settings of a command, in the order -h prints them, with their built-in defaults.
func Settings(mode Mode) []Setting {
	fs := flag.NewFlagSet(string(mode), flag.ContinueOnError)
	c := Config{Mode: mode}
	var errs []error
	define(fs, &c, &raw{}, func(string) string { return "" }, &errs)
	var out []Setting
	fs.VisitAll(func(f *flag.Flag) {
		st := Setting{Flag: f.Name, Default: f.DefValue, Help: f.Usage}
		if i := strings.LastIndex(f.Usage, " [PHILOTES_"); i >= 0 && strings.HasSuffix(f.Usage, "]") {
			st.Help, st.Env = f.Usage[:i], f.Usage[i+2:len(f.Usage)-1]
		}
		out = append(out, st)
	})
	return out
}

func (c *Config) validate() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !c.NoReader && c.SourceURL == "" {
		bad("PHILOTES_SOURCE_URL is required: set it to the source database URL (postgres://user:password@host:5432/db), or run with --no-reader")
	}
	for _, db := range []struct{ name, url string }{{"PHILOTES_SOURCE_URL", c.SourceURL}, {"PHILOTES_BUFFER_URL", c.BufferURL}} {
		if db.url == "" {
			continue
		}
		if _, err := pgconn.ParseConfig(db.url); err != nil {
			bad("%s is not a valid PostgreSQL URL: %v", db.name, redact(err))
		} else if misplacedAt(db.url) {
			// url.Parse took part of the password for the host, the port, a path or a query.
			bad("%s: the user or password holds a character URLs reserve (/ ? # @): percent-encode it (/ as %%2F, ? as %%3F, # as %%23, @ as %%40)", db.name)
		}
	}
	if c.BufferURL == "" {
		bad("PHILOTES_BUFFER_URL is required when there is no PHILOTES_SOURCE_URL")
	}
	if !simpleName.MatchString(c.Slot) {
		bad("PHILOTES_SLOT=%q: a slot name is 1-63 characters of a-z, 0-9 and _", c.Slot)
	}
	if !simpleName.MatchString(c.Publication) {
		// pgoutput reads publication_names as a list of unquoted identifiers: it lowercases them and splits at commas.
		bad("PHILOTES_PUBLICATION=%q: a publication name is 1-63 characters of a-z, 0-9 and _", c.Publication)
	}
	if c.SourceName == "" || len(c.SourceName) > 200 {
		bad("PHILOTES_SOURCE_NAME=%q: use a short non-empty name", c.SourceName)
	}
	switch {
	case c.Processors < 0 || c.Processors > 256:
		bad("PHILOTES_PROCESSORS=%d: use 0 to 256", c.Processors)
	case c.Processors == 0 && c.NoReader && c.Mode != Backfill:
		bad("PHILOTES_PROCESSORS=0 with no reader leaves nothing to do: use at least 1 processor")
	}
	if c.MaxEventsPerSecond < 0 {
		bad("PHILOTES_PROCESSOR_MAX_EVENTS_PER_SECOND=%d: use 0 (no cap) or a positive number of events per second", c.MaxEventsPerSecond)
	}
	if c.BackfillWorkers < 0 || c.BackfillWorkers > 64 {
		bad("PHILOTES_BACKFILL_WORKERS=%d: use 0 to 64", c.BackfillWorkers)
	}
	if c.BackfillChunkRows < 100 || c.BackfillChunkRows > 1_000_000 {
		bad("PHILOTES_BACKFILL_CHUNK_ROWS=%d: use 100 to 1000000", c.BackfillChunkRows)
	}
	if c.BackfillMaxRowsPerSecond < 0 {
		bad("PHILOTES_BACKFILL_MAX_ROWS_PER_SECOND=%d: use 0 (no cap) or a positive number of rows per second", c.BackfillMaxRowsPerSecond)
	}
	if c.Mode == Backfill && c.SourceURL == "" {
		bad("PHILOTES_SOURCE_URL is required to backfill: set it to the source database URL")
	}
	if c.BatchSize < 1 || c.BatchSize > 1_000_000 {
		bad("PHILOTES_BATCH_SIZE=%d: use 1 to 1000000", c.BatchSize)
	}
	for name, d := range map[string]time.Duration{
		"PHILOTES_FLUSH_INTERVAL": c.FlushInterval, "PHILOTES_STATUS_INTERVAL": c.StatusInterval,
		"PHILOTES_READER_RETRY_INTERVAL": c.ReaderRetryInterval, "PHILOTES_STATS_INTERVAL": c.StatsInterval,
		"PHILOTES_IDLE_POLL_INTERVAL": c.IdlePollInterval, "PHILOTES_SHUTDOWN_TIMEOUT": c.ShutdownTimeout,
		"PHILOTES_ICEBERG_COMMIT_INTERVAL": c.CommitInterval, "PHILOTES_ICEBERG_SNAPSHOT_RETENTION": c.SnapshotRetention,
	} {
		if d <= 0 {
			bad("%s=%s: must be positive", name, d)
		}
	}
	if c.MaintenanceInterval < 0 {
		bad("PHILOTES_ICEBERG_MAINTENANCE_INTERVAL=%s: use a positive duration such as 5m, or 0s to turn maintenance off", c.MaintenanceInterval)
	}
	if c.CommitBytes < 1<<10 {
		bad("PHILOTES_ICEBERG_COMMIT_BYTES=%d: use at least 1024 (bytes)", c.CommitBytes)
	}
	if c.SnapshotsToKeep < 1 || c.SnapshotsToKeep > 10_000 {
		bad("PHILOTES_ICEBERG_SNAPSHOTS_TO_KEEP=%d: use 1 to 10000", c.SnapshotsToKeep)
	}
	if c.TargetFileBytes < 1<<20 {
		bad("PHILOTES_ICEBERG_TARGET_FILE_BYTES=%d: use at least 1048576 (1 MiB)", c.TargetFileBytes)
	}
	if err := iceberg.CheckWarehouse(c.IcebergWarehouse); err != nil {
		bad("PHILOTES_ICEBERG_WAREHOUSE=%q: %v", redactURL(c.IcebergWarehouse), err)
	}
	if c.IcebergCatalogURI != "" {
		if u, err := url.Parse(c.IcebergCatalogURI); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("PHILOTES_ICEBERG_CATALOG_URI=%q: use an http(s):// REST catalog URL, or leave it empty for the SQL catalog in the buffer database", c.IcebergCatalogURI)
		}
	}
	if c.IcebergNamespace == "" {
		bad("PHILOTES_ICEBERG_NAMESPACE must not be empty")
	}
	if _, port, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("PHILOTES_HTTP_ADDR=%q: use host:port or :port, e.g. :8080", c.HTTPAddr)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		bad("PHILOTES_HTTP_ADDR=%q: the port must be a number from 0 to 65535, e.g. :8080", c.HTTPAddr)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("PHILOTES_LOG_FORMAT=%q: use json or text", c.LogFormat)
	}
	return errs
}

// tableList parses a comma-separated schema.table list (a bare name is in schema public).
func tableList(list, setting string, errs *[]error) []string {
	var out []string
	for _, t := range strings.Split(list, ",") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		if !strings.Contains(t, ".") {
			t = "public." + t
		}
		if s, n, _ := strings.Cut(t, "."); s == "" || n == "" || strings.Count(t, ".") > 1 {
			*errs = append(*errs, fmt.Errorf("%s: %q is not a table name: use schema.table, comma-separated", setting, t))
			continue
		}
		out = append(out, t)
	}
	return out
}

// fromEnv parses variable name when it is set, recording a message naming it when it does not parse.
func fromEnv[T any](getenv func(string) string, errs *[]error, name string, def T, parse func(string) (T, error), want string) T {
	s := getenv(name)
	if s == "" {
		return def
	}
	v, err := parse(s)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s=%q: %s", name, s, want))
		return def
	}
	return v
}

// BufferSharesSource reports whether the buffer database is the source database (same host, port and database).
func (c *Config) BufferSharesSource() bool {
	src, err1 := pgconn.ParseConfig(c.SourceURL)
	buf, err2 := pgconn.ParseConfig(c.BufferURL)
	if err1 != nil || err2 != nil {
		return c.SourceURL == c.BufferURL
	}
	return src.Host == buf.Host && src.Port == buf.Port && src.Database == buf.Database
}

// misplacedAt reports a URL whose user information, read up to its last '@', holds a character URLs reserve: the
// parser ended the user information early and took part of the password for the host, port, path or query.
func misplacedAt(s string) bool {
	i := strings.Index(s, "://")
	j := strings.LastIndex(s, "@")
	if i < 0 || j < i {
		return false
	}
	return strings.ContainsAny(s[i+3:j], "/?#@")
}

// redactURL drops the user information (a password) from a URL for messages.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		u.User = nil
		return u.String()
	}
	return redactText(s)
}

// redact keeps passwords out of error messages about URLs.
func redact(err error) string { return redactText(err.Error()) }

// redactText cuts the user information out of the first URL in s, up to the URL's last '@' (a password may hold
// more, unescaped); the URL ends at a backquote, space or newline.
func redactText(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		end := len(s)
		if k := strings.IndexAny(s[i:], "` \n"); k >= 0 {
			end = i + k
		}
		if j := strings.LastIndex(s[i:end], "@"); j >= 0 {
			s = s[:i+3] + "…" + s[i+j:]
		}
	}
	return s
}

// FromOS parses os.Args and the process environment.
func FromOS() (Config, error) { return Parse(os.Args[1:], os.Getenv, os.Stderr) }
