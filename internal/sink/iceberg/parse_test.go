package iceberg

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseDateTime(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		withTime bool
		withZone bool
		want     time.Time
		wantErr  error
	}{
		{"date", "2026-11-27", false, false, time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC), nil},
		{"date before epoch", "1900-02-28", false, false, time.Date(1900, 2, 28, 0, 0, 0, 0, time.UTC), nil},
		{"date five-digit year", "10000-01-01", false, false, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), nil},
		{"date BC", "0044-03-15 BC", false, false, time.Date(-43, 3, 15, 0, 0, 0, 0, time.UTC), nil},
		{"date infinity", "infinity", false, false, time.Time{}, errNotRepresentable},
		{"timestamp", "2026-11-27 10:00:00", true, false, time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), nil},
		{"timestamp micros", "2026-11-27 10:00:00.123456", true, false, time.Date(2026, 11, 27, 10, 0, 0, 123456000, time.UTC), nil},
		{"timestamp short fraction", "2026-11-27 10:00:00.5", true, false, time.Date(2026, 11, 27, 10, 0, 0, 500000000, time.UTC), nil},
		{"timestamptz utc", "2026-11-27 10:00:00.123456+00", true, true, time.Date(2026, 11, 27, 10, 0, 0, 123456000, time.UTC), nil},
		{"timestamptz offset", "2026-11-27 10:00:00+05:30", true, true, time.Date(2026, 11, 27, 4, 30, 0, 0, time.UTC), nil},
		{"timestamptz negative offset", "2026-11-27 10:00:00-03", true, true, time.Date(2026, 11, 27, 13, 0, 0, 0, time.UTC), nil},
		{"timestamptz -infinity", "-infinity", true, true, time.Time{}, errNotRepresentable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDateTime([]byte(tt.in), tt.withTime, tt.withZone)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.True(t, tt.want.Equal(got), "got %v want %v", got, tt.want)
		})
	}

	bad := []struct{ in, kind string }{
		{"2026-13-01", "date"}, {"2026-1-01", "date"}, {"2026-11-27x", "date"},
		{"2026-11-27 10:00", "timestamp"}, {"2026-11-27 10:00:00", "timestamptz"}, {"2026-11-27 10:00:00.", "timestamp"},
	}
	for _, b := range bad {
		t.Run("bad "+b.kind+" "+b.in, func(t *testing.T) {
			_, err := parseDateTime([]byte(b.in), b.kind != "date", b.kind == "timestamptz")
			require.Error(t, err)
			require.NotErrorIs(t, err, errNotRepresentable)
		})
	}
}

func TestParseTime(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"00:00:00", 0, true},
		{"10:00:00.123456", (10*3600)*1_000_000 + 123456, true},
		{"23:59:59.9", (23*3600+59*60+59)*1_000_000 + 900000, true},
		{"24:00:00", 24 * 3600 * 1_000_000, true},
		{"10:00", 0, false},
		{"10:00:00+02", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseTime([]byte(tt.in))
			if !tt.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestParseDecimal(t *testing.T) {
	tests := []struct {
		in          string
		prec, scale int32
		want        string // unscaled value, or "" for an error
		wantErr     error
	}{
		{"12.34", 10, 2, "1234", nil},
		{"-12.34", 10, 2, "-1234", nil},
		{"0.05", 10, 2, "5", nil},
		{"7", 10, 2, "700", nil},
		{"12.3", 10, 2, "1230", nil},
		{"0", 5, 0, "0", nil},
		{"123456789012345678901234567890.12345678", 38, 8, "12345678901234567890123456789012345678", nil},
		{"-99999999999999999999.99", 22, 2, "-9999999999999999999999", nil},
		{"NaN", 10, 2, "", errNotRepresentable},
		{"Infinity", 10, 2, "", errNotRepresentable},
		{"abc", 10, 2, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseDecimal([]byte(tt.in), tt.prec, tt.scale)
			if tt.want == "" {
				require.Error(t, err)
				if tt.wantErr != nil {
					require.ErrorIs(t, err, tt.wantErr)
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got.BigInt().String())
		})
	}
}

func TestDecodeBytea(t *testing.T) {
	tests := []struct {
		in   string
		want []byte
		ok   bool
	}{
		{`\x0a0b`, []byte{0x0a, 0x0b}, true},
		{`\x`, []byte{}, true},
		{`\x0`, nil, false},
		{`\xzz`, nil, false},
		{`ab\\c\001`, []byte("ab\\c\x01"), true},
		{`a\q`, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := decodeBytea(nil, []byte(tt.in))
			if !tt.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, append([]byte{}, got...))
		})
	}
}

func TestNumericPrecisionScale(t *testing.T) {
	tests := []struct {
		name        string
		typmod      int32
		prec, scale int
		ok          bool
	}{
		{"numeric(10,2)", 10<<16 | 2 + 4, 10, 2, true},
		{"numeric(38,0)", 38<<16 + 4, 38, 0, true},
		{"numeric unbounded", -1, 0, 0, false},
		{"numeric(39,2)", 39<<16 | 2 + 4, 0, 0, false},
		{"numeric(5,-2)", 5<<16 | (0x7ff & -2) + 4, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, s, ok := numericPrecisionScale(tt.typmod)
			require.Equal(t, tt.ok, ok)
			if ok {
				require.Equal(t, [2]int{tt.prec, tt.scale}, [2]int{p, s})
			}
		})
	}
}
