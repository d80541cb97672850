package iceberg

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow/decimal128"
	"github.com/google/uuid"
)

// Parsers of PostgreSQL's text output format (DateStyle ISO, bytea_output hex or escape).

// errNotRepresentable marks a valid PostgreSQL value that the Iceberg type cannot hold: numeric NaN and
// infinities, date and timestamp infinities. Such values are written as nulls.
var errNotRepresentable = errors.New("value not representable in Iceberg")

func parseBool(s []byte) (bool, error) {
	switch string(s) {
	case "t", "true":
		return true, nil
	case "f", "false":
		return false, nil
	}
	return false, fmt.Errorf("invalid boolean %q", s)
}

func parseInt(s []byte, bits int) (int64, error) {
	return strconv.ParseInt(string(s), 10, bits)
}

// parseFloat accepts PostgreSQL's NaN, Infinity and -Infinity, which strconv understands.
func parseFloat(s []byte, bits int) (float64, error) {
	return strconv.ParseFloat(string(s), bits)
}

// parseDecimal parses a numeric's text form into an unscaled 128-bit integer with the given scale. Values of
// up to 18 digits take a fast path; others go through decimal128.FromString.
func parseDecimal(s []byte, prec, scale int32) (decimal128.Num, error) {
	switch string(s) {
	case "NaN", "Infinity", "-Infinity":
		return decimal128.Num{}, errNotRepresentable
	}
	neg := len(s) > 0 && s[0] == '-'
	digits := s
	if neg || (len(s) > 0 && s[0] == '+') {
		digits = s[1:]
	}
	var v int64
	n, frac, dot, ok := 0, int32(0), false, len(digits) > 0
	for _, c := range digits {
		switch {
		case c >= '0' && c <= '9':
			if dot {
				frac++
			}
			if v != 0 || c != '0' {
				n++
			}
			v = v*10 + int64(c-'0')
		case c == '.' && !dot:
			dot = true
		default:
			ok = false
		}
		if !ok || n > 18 || frac > scale {
			ok = false
			break
		}
	}
	if ok && n+int(scale-frac) <= 18 {
		for ; frac < scale; frac++ {
			v *= 10
		}
		if neg {
			v = -v
		}
		return decimal128.FromI64(v), nil
	}
	num, err := decimal128.FromString(string(s), prec, scale)
	if err != nil {
		return decimal128.Num{}, fmt.Errorf("invalid numeric(%d,%d) %q: %w", prec, scale, s, err)
	}
	return num, nil
}

// parseDate returns days since 1970-01-01.
func parseDate(s []byte) (int32, error) {
	t, err := parseDateTime(s, false, false)
	if err != nil {
		return 0, err
	}
	return int32(t.Unix() / 86400), nil
}

// parseTimestamp returns microseconds since the epoch (UTC for timestamptz, wall time for timestamp).
func parseTimestamp(s []byte, withZone bool) (int64, error) {
	t, err := parseDateTime(s, true, withZone)
	if err != nil {
		return 0, err
	}
	return t.UnixMicro(), nil
}

// parseDateTime parses "Y-MM-DD[ HH:MM:SS[.ffffff][+HH[:MM[:SS]]]][ BC]", the ISO output of date, timestamp
// and timestamptz. Years may have more than four digits; BC years are converted to astronomical years.
func parseDateTime(s []byte, withTime, withZone bool) (time.Time, error) {
	orig := s
	switch string(s) {
	case "infinity", "-infinity":
		return time.Time{}, errNotRepresentable
	}
	bc := bytes.HasSuffix(s, []byte(" BC"))
	if bc {
		s = s[:len(s)-3]
	}
	p := parser{s: s}
	year := p.number(1, 7)
	p.expect('-')
	month := p.number(2, 2)
	p.expect('-')
	day := p.number(2, 2)
	var hour, minute, sec, micros, offset int
	if withTime {
		p.expect(' ')
		hour, minute, sec, micros = p.clock()
		if withZone {
			offset = p.zone()
		}
	}
	if p.err != nil || len(p.s) != 0 || month < 1 || month > 12 || day < 1 || day > 31 {
		return time.Time{}, fmt.Errorf("invalid date/time %q", orig)
	}
	if bc {
		year = 1 - year
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, micros*1000, time.UTC)
	return t.Add(-time.Duration(offset) * time.Second), nil
}

// parseTime returns microseconds since midnight for "HH:MM:SS[.ffffff]".
func parseTime(s []byte) (int64, error) {
	p := parser{s: s}
	h, m, sec, micros := p.clock()
	if p.err != nil || len(p.s) != 0 || h > 24 || m > 59 || sec > 60 {
		return 0, fmt.Errorf("invalid time %q", s)
	}
	return ((int64(h)*60+int64(m))*60+int64(sec))*1_000_000 + int64(micros), nil
}

func parseUUID(s []byte) (uuid.UUID, error) {
	return uuid.ParseBytes(s)
}

// decodeBytea appends the bytes of a bytea text value to dst: hex format ("\x0a0b") or the legacy escape
// format (backslash-octal escapes).
func decodeBytea(dst, s []byte) ([]byte, error) {
	if bytes.HasPrefix(s, []byte(`\x`)) {
		hexPart := s[2:]
		if len(hexPart)%2 != 0 {
			return dst, fmt.Errorf("invalid bytea: odd number of hex digits")
		}
		n := len(dst)
		dst = append(dst, make([]byte, len(hexPart)/2)...)
		if _, err := hex.Decode(dst[n:], hexPart); err != nil {
			return dst, fmt.Errorf("invalid bytea: %w", err)
		}
		return dst, nil
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		switch {
		case i+1 < len(s) && s[i+1] == '\\':
			dst = append(dst, '\\')
			i++
		case i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]):
			dst = append(dst, (s[i+1]-'0')<<6|(s[i+2]-'0')<<3|(s[i+3]-'0'))
			i += 3
		default:
			return dst, fmt.Errorf("invalid bytea escape at byte %d", i)
		}
	}
	return dst, nil
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// parser reads fixed-layout numbers from a byte slice, remembering the first error.
type parser struct {
	s   []byte
	err error
}

var errSyntax = errors.New("syntax error")

// number reads between minDigits and maxDigits decimal digits.
func (p *parser) number(minDigits, maxDigits int) int {
	n, v := 0, 0
	for n < len(p.s) && n < maxDigits && p.s[n] >= '0' && p.s[n] <= '9' {
		v = v*10 + int(p.s[n]-'0')
		n++
	}
	if n < minDigits {
		p.err = errSyntax
	}
	p.s = p.s[n:]
	return v
}

func (p *parser) expect(c byte) {
	if len(p.s) == 0 || p.s[0] != c {
		p.err = errSyntax
		return
	}
	p.s = p.s[1:]
}

// clock reads "HH:MM:SS[.ffffff]"; fractions beyond microseconds are truncated.
func (p *parser) clock() (hour, minute, sec, micros int) {
	hour = p.number(2, 2)
	p.expect(':')
	minute = p.number(2, 2)
	p.expect(':')
	sec = p.number(2, 2)
	if len(p.s) > 0 && p.s[0] == '.' {
		p.s = p.s[1:]
		n := 0
		for len(p.s) > 0 && p.s[0] >= '0' && p.s[0] <= '9' {
			if n < 6 {
				micros = micros*10 + int(p.s[0]-'0')
				n++
			}
			p.s = p.s[1:]
		}
		if n == 0 {
			p.err = errSyntax
		}
		for ; n < 6; n++ {
			micros *= 10
		}
	}
	return hour, minute, sec, micros
}

// zone reads a UTC offset "+HH[:MM[:SS]]" and returns it in seconds east of UTC.
func (p *parser) zone() int {
	if len(p.s) == 0 || (p.s[0] != '+' && p.s[0] != '-') {
		p.err = errSyntax
		return 0
	}
	sign := 1
	if p.s[0] == '-' {
		sign = -1
	}
	p.s = p.s[1:]
	off := p.number(2, 2) * 3600
	if len(p.s) > 0 && p.s[0] == ':' {
		p.s = p.s[1:]
		off += p.number(2, 2) * 60
		if len(p.s) > 0 && p.s[0] == ':' {
			p.s = p.s[1:]
			off += p.number(2, 2)
		}
	}
	return sign * off
}
