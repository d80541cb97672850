package iceberg

import (
	"errors"
	"maps"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/test/s3test"
)

// TestCheckWarehouse proves the forms of warehouse URL the sink and the configuration accept.
func TestCheckWarehouse(t *testing.T) {
	tests := []struct {
		location string
		ok       bool
	}{
		{"file:///var/lib/philotes/warehouse", true},
		{"file://localhost/var/lib/philotes", true},
		{"s3://bucket", true},
		{"s3://bucket/prefix/deeper", true},
		{"s3a://bucket/prefix", true},
		{"file://relative/path", false},
		{"file:///", false},
		{"file://", false},
		{"/var/lib/philotes", false},
		{"s3:///prefix", false},
		{"s3://key:secret@bucket/prefix", false},
		{"gs://bucket/prefix", false},
		{"ftp://host/lake", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.location, func(t *testing.T) {
			err := CheckWarehouse(tt.location)
			if tt.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				require.NotContains(t, err.Error(), "secret", "the message never echoes credentials")
			}
		})
	}
}

// TestS3Warehouse proves, on a real S3 server, that New checks the warehouse by writing to it: a usable bucket
// works end to end (write, commit, read back), and each misconfiguration fails at New with ErrWarehouse and a
// message naming the setting to fix, while an unreachable endpoint is a retryable error, not ErrWarehouse.
func TestS3Warehouse(t *testing.T) {
	srv := s3test.New(t)
	srv.MustCreateBucket(t, "lake")
	env := newTestEnv(t)
	s3cfg := func(edit func(props map[string]string)) Config {
		cfg := env.config()
		cfg.Warehouse = "s3://lake/warehouse"
		cfg.Properties = maps.Clone(srv.Properties())
		if edit != nil {
			edit(cfg.Properties)
		}
		return cfg
	}

	t.Run("round trip", func(t *testing.T) {
		ctx := testContext(t, time.Minute)
		s := newTestSink(t, s3cfg(nil))
		writeAndCommit(t, ctx, s, 1, idTC(idRange(1, 100)...))
		ids, tbl := writtenIDs(t, ctx, s)
		require.Equal(t, idRange(1, 100), ids)
		require.Regexp(t, `^s3://lake/warehouse/`, tbl.Location())
	})

	t.Run("keys from the AWS SDK's default chain", func(t *testing.T) {
		// No static keys in the properties: the SDK reads AWS_* variables (as it reads a web identity token
		// under IRSA).
		t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
		t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
		t.Setenv("AWS_CONFIG_FILE", "/dev/null")
		t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
		ctx := testContext(t, time.Minute)
		s := newTestSink(t, s3cfg(func(p map[string]string) {
			delete(p, "s3.access-key-id")
			delete(p, "s3.secret-access-key")
		}))
		writeAndCommit(t, ctx, s, 1, idTC(idRange(1, 10)...))
	})

	// A port nothing listens on: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedPort := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	require.NoError(t, l.Close())

	tests := []struct {
		name      string
		warehouse string
		edit      func(props map[string]string)
		permanent bool
		want      string
	}{
		{"missing bucket", "s3://no-such-bucket/warehouse", nil, true, "bucket does not exist"},
		{"wrong secret", "", func(p map[string]string) { p["s3.secret-access-key"] = "wrong" }, true, "PHILOTES_S3_SECRET_ACCESS_KEY"},
		{"unknown key", "", func(p map[string]string) { p["s3.access-key-id"] = "nobody" }, true, "PHILOTES_S3_ACCESS_KEY_ID"},
		{"unwritable folder", "file:///proc/version/warehouse", nil, true, "probe file"},
		{"no region", "", func(p map[string]string) { delete(p, "s3.region") }, true, "PHILOTES_S3_REGION"},
		{"endpoint not listening", "", func(p map[string]string) { p["s3.endpoint"] = "http://127.0.0.1:" + closedPort }, false, "probe object"},
	}
	// The SDK reads the region from the environment and its config files when it has none.
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t, time.Minute)
			cfg := s3cfg(tt.edit)
			if tt.warehouse != "" {
				cfg.Warehouse = tt.warehouse
			}
			s, err := New(ctx, cfg)
			if err == nil {
				s.Close()
			}
			require.ErrorContains(t, err, tt.want)
			require.Equal(t, tt.permanent, errors.Is(err, ErrWarehouse), "ErrWarehouse: %v", err)
			require.NotContains(t, err.Error(), srv.SecretKey, "no secret in the message")
			t.Log(err)
		})
	}
}
