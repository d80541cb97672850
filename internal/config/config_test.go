package config

import (
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// Defaults fill in what the contract promises when only the source is given.
func TestDefaults(t *testing.T) {
	c, err := Parse([]string{"run"}, env(map[string]string{"PHILOTES_SOURCE_URL": "postgres://u@h/db"}), io.Discard)
	require.NoError(t, err)
	require.Equal(t, Run, c.Mode)
	require.Equal(t, "postgres://u@h/db", c.BufferURL)
	require.Equal(t, "philotes_cdc", c.Slot)
	require.Equal(t, "philotes_cdc", c.SourceName)
	require.Equal(t, "philotes_pub", c.Publication)
	require.Equal(t, 2, c.Processors)
	require.Equal(t, ":8080", c.HTTPAddr)
	require.Equal(t, 25*time.Second, c.ShutdownTimeout)
	require.Empty(t, c.Tables)
}

// Flags win over the environment, and drain never reads the slot.
func TestFlagsAndModes(t *testing.T) {
	c, err := Parse([]string{"drain", "--processors", "4", "--tables", "orders, app.items"},
		env(map[string]string{"PHILOTES_BUFFER_URL": "postgres://u@h/buf", "PHILOTES_PROCESSORS": "9"}), io.Discard)
	require.NoError(t, err)
	require.Equal(t, Drain, c.Mode)
	require.True(t, c.NoReader)
	require.Equal(t, 4, c.Processors)
	require.Equal(t, []string{"public.orders", "app.items"}, c.Tables)
}

// Every bad setting is reported at once, each naming its variable and the fix.
func TestErrorsNameTheSetting(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"no command", nil, nil, []string{"philotes-worker run, drain or backfill"}},
		{"unknown command", []string{"serve"}, nil, []string{`unknown command "serve"`}},
		{"missing source", []string{"run"}, nil, []string{"PHILOTES_SOURCE_URL is required"}},
		{"many at once", []string{"run"}, map[string]string{
			"PHILOTES_SOURCE_URL":        "postgres://u@h/db",
			"PHILOTES_PROCESSORS":        "lots",
			"PHILOTES_SLOT":              "Bad-Slot",
			"PHILOTES_SHUTDOWN_TIMEOUT":  "soon",
			"PHILOTES_ICEBERG_WAREHOUSE": "ftp://x",
			"PHILOTES_LOG_LEVEL":         "loud",
			"PHILOTES_TABLES":            "a.b.c",
		}, []string{
			`PHILOTES_PROCESSORS="lots": must be a whole number`,
			`PHILOTES_SLOT="Bad-Slot"`,
			`PHILOTES_SHUTDOWN_TIMEOUT="soon": must be a duration`,
			`PHILOTES_ICEBERG_WAREHOUSE="ftp://x"`,
			`PHILOTES_LOG_LEVEL="loud"`,
			`PHILOTES_TABLES: "a.b.c"`,
		}},
		{"bad url keeps the password out", []string{"run"}, map[string]string{"PHILOTES_SOURCE_URL": "postgres://u:secret@h:notaport/db"},
			[]string{"PHILOTES_SOURCE_URL is not a valid PostgreSQL URL"}},
		{"drain without processors", []string{"drain", "--processors", "0"}, map[string]string{"PHILOTES_BUFFER_URL": "postgres://u@h/b"},
			[]string{"use at least 1 processor"}},
		{"object store settings", []string{"run"}, map[string]string{
			"PHILOTES_SOURCE_URL":                "postgres://u@h/db",
			"PHILOTES_ICEBERG_WAREHOUSE":         "file://relative/path",
			"PHILOTES_S3_PATH_STYLE":             "yes",
			"PHILOTES_S3_ENDPOINT":               "minio:9000",
			"PHILOTES_S3_SECRET_ACCESS_KEY":      "secret-value",
			"PHILOTES_ICEBERG_CATALOG_WAREHOUSE": "lake",
		}, []string{
			`PHILOTES_ICEBERG_WAREHOUSE="file://relative/path": a file:// warehouse needs an absolute folder`,
			`PHILOTES_S3_PATH_STYLE="yes": use true`,
			`PHILOTES_S3_ENDPOINT="minio:9000": use an http(s):// URL`,
			"PHILOTES_S3_ACCESS_KEY_ID and PHILOTES_S3_SECRET_ACCESS_KEY go together",
			"PHILOTES_ICEBERG_CATALOG_WAREHOUSE is for a REST catalog",
		}},
		{"warehouse URL keeps credentials out", []string{"run"}, map[string]string{"PHILOTES_SOURCE_URL": "postgres://u@h/db",
			"PHILOTES_ICEBERG_WAREHOUSE": "s3://key:secret@bucket/x"}, []string{"PHILOTES_ICEBERG_WAREHOUSE=\"s3://bucket/x\""}},
		{"listen port out of range", []string{"run"}, map[string]string{"PHILOTES_SOURCE_URL": "postgres://u@h/db", "PHILOTES_HTTP_ADDR": "127.0.0.1:99999"},
			[]string{`PHILOTES_HTTP_ADDR="127.0.0.1:99999": the port must be a number from 0 to 65535`}},
		{"publication name pgoutput cannot read", []string{"run"}, map[string]string{"PHILOTES_SOURCE_URL": "postgres://u@h/db", "PHILOTES_PUBLICATION": `My"Pub`},
			[]string{`PHILOTES_PUBLICATION="My\"Pub": a publication name is 1-63 characters`}},
		{"unescaped password keeps the password out", []string{"run"}, map[string]string{"PHILOTES_SOURCE_URL": "postgres://u:my?secret@h/db"},
			[]string{"PHILOTES_SOURCE_URL: the user or password holds a character URLs reserve"}},
		{"two @ keep the password out", []string{"run"}, map[string]string{"PHILOTES_SOURCE_URL": "postgres://u:my@secret/x@h:zz/db"},
			[]string{"PHILOTES_SOURCE_URL"}},
		{"rest catalog must be http", []string{"run"}, map[string]string{"PHILOTES_SOURCE_URL": "postgres://u@h/db", "PHILOTES_ICEBERG_CATALOG_URI": "thrift://x"},
			[]string{"PHILOTES_ICEBERG_CATALOG_URI"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.args, env(tc.env), io.Discard)
			require.Error(t, err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			require.NotContains(t, err.Error(), "secret")
		})
	}
}

// Object store settings become the Iceberg file IO's properties; path style is left to iceberg-go (path-style
// with an endpoint) unless set.
func TestObjectStoreProperties(t *testing.T) {
	base := map[string]string{"PHILOTES_SOURCE_URL": "postgres://u@h/db", "PHILOTES_ICEBERG_WAREHOUSE": "s3://lake/wh"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name string
		env  map[string]string
		want map[string]string
	}{
		{"nothing set: the SDK's default chain", with(), map[string]string{}},
		{"endpoint and keys", with("PHILOTES_S3_ENDPOINT", "http://minio:9000", "PHILOTES_S3_REGION", "eu-1",
			"PHILOTES_S3_ACCESS_KEY_ID", "k", "PHILOTES_S3_SECRET_ACCESS_KEY", "s", "PHILOTES_S3_SESSION_TOKEN", "t"),
			map[string]string{"s3.endpoint": "http://minio:9000", "s3.region": "eu-1", "s3.access-key-id": "k",
				"s3.secret-access-key": "s", "s3.session-token": "t"}},
		{"path style on", with("PHILOTES_S3_PATH_STYLE", "true"), map[string]string{"s3.force-virtual-addressing": "false"}},
		{"path style off", with("PHILOTES_S3_PATH_STYLE", "false"), map[string]string{"s3.force-virtual-addressing": "true"}},
		{"REST catalog warehouse name", with("PHILOTES_ICEBERG_CATALOG_URI", "http://lakekeeper:8181/catalog",
			"PHILOTES_ICEBERG_CATALOG_WAREHOUSE", "lake"), map[string]string{"warehouse": "lake"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]string{"run"}, env(tc.env), io.Discard)
			require.NoError(t, err)
			require.Equal(t, tc.want, c.IcebergProperties)
		})
	}
}

// The buffer shares the source when host, port and database match, whatever the user or options.
func TestBufferSharesSource(t *testing.T) {
	cases := []struct {
		src, buf string
		want     bool
	}{
		{"postgres://a@h:5432/app", "postgres://a@h:5432/app", true},
		{"postgres://a:x@h:5432/app?sslmode=require", "postgres://b:y@h/app", true},
		{"postgres://a@h:5432/app", "postgres://a@h:5432/philotes_buffer", false},
		{"postgres://a@h:5432/app", "postgres://a@other:5432/app", false},
		{"postgres://a@h:5432/app", "postgres://a@h:5433/app", false},
	}
	for _, tc := range cases {
		t.Run(tc.buf, func(t *testing.T) {
			c := Config{SourceURL: tc.src, BufferURL: tc.buf}
			require.Equal(t, tc.want, c.BufferSharesSource())
		})
	}
}
