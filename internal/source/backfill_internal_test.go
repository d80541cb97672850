package source

import (
	"encoding/binary"
	"testing"

	"github.com/google/uuid"
)

func TestParseSnapshotAndVisibility(t *testing.T) {
	snap, err := ParseSnapshot("100:110:102,105")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		xid  uint64
		sees bool
	}{
		{99, true},   // committed before the oldest running transaction
		{100, true},  // xmin itself is not in the running list: it ended
		{102, false}, // running when the snapshot was taken
		{105, false},
		{109, true},
		{110, false}, // not yet started
		{200, false},
	} {
		if got := snap.Sees(tc.xid); got != tc.sees {
			t.Errorf("Sees(%d) = %v, want %v", tc.xid, got, tc.sees)
		}
	}
	for _, bad := range []string{"", "1:2", "a:2:", "1:2:x"} {
		if _, err := ParseSnapshot(bad); err == nil {
			t.Errorf("ParseSnapshot(%q) accepted", bad)
		}
	}
}

func TestWidenTransactionIDs(t *testing.T) {
	const epoch = uint64(1) << 32
	for _, tc := range []struct {
		name      string
		base      uint64
		xid       uint32
		want      uint64
		wantLarge uint64
	}{
		{"same epoch", 1000, 1200, 1200, 1200},
		{"older in the same epoch", 1000, 900, 900, 1000},
		{"wrapped into the next epoch", epoch - 10, 5, epoch + 5, epoch + 5},
		{"just before a wrap, seen after it", epoch + 5, 0xfffffff0, epoch - 16, epoch + 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &streamState{xid: tc.base}
			if got := s.widen(tc.xid); got != tc.want {
				t.Errorf("widen(%d) from %d = %d, want %d", tc.xid, tc.base, got, tc.want)
			}
			if s.xid != tc.wantLarge {
				t.Errorf("largest seen = %d, want %d", s.xid, tc.wantLarge)
			}
		})
	}
}

func TestParseMark(t *testing.T) {
	a := uuid.New()
	for _, tc := range []struct {
		content string
		ok      bool
	}{
		{"start 16384 2", true},
		{"chunk " + a.String(), true},
		{"chunk " + uuid.Nil.String(), false},
		{"start x 2", false},
		{"chunk", false},
		{"hello", false},
	} {
		m, ok := parseMark(tc.content, 42)
		if ok != tc.ok {
			t.Errorf("parseMark(%q) ok = %v, want %v", tc.content, ok, tc.ok)
			continue
		}
		if ok && m.LSN != 42 {
			t.Errorf("parseMark(%q) LSN = %d", tc.content, m.LSN)
		}
	}
	if m, _ := parseMark("start 16384 2", 1); m.Relation != 16384 || m.Run != 2 {
		t.Errorf("start mark = %+v", m)
	}
	if m, _ := parseMark("chunk "+a.String(), 1); m.Attempt != a {
		t.Errorf("chunk mark = %+v", m)
	}
}

func TestParseMessage(t *testing.T) {
	b := []byte{'M', 0}
	b = binary.BigEndian.AppendUint64(b, 0x1234)
	b = append(b, "philotes.backfill\x00"...)
	b = binary.BigEndian.AppendUint32(b, 5)
	b = append(b, "hello"...)
	m, err := parseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.transactional || m.lsn != 0x1234 || m.prefix != markPrefix || string(m.content) != "hello" {
		t.Errorf("parsed %+v", m)
	}
	if _, err := parseMessage(b[:len(b)-1]); err == nil {
		t.Error("a truncated message was accepted")
	}
}

func TestKeysAndTuplesEncodeTheSameValuesTheSameWay(t *testing.T) {
	// The reader builds keys from pgoutput tuples, a chunk from text results: both must agree.
	vals := [][]byte{[]byte("42"), nil, []byte("")}
	tuple := EncodeTuple(vals)
	decoded, err := DecodeTuple(tuple, nil)
	if err != nil {
		t.Fatal(err)
	}
	var again [][]byte
	for _, v := range decoded {
		if v.Null {
			again = append(again, nil)
		} else {
			again = append(again, v.Text)
		}
	}
	if string(EncodeKey(vals)) != string(EncodeKey(again)) {
		t.Error("a key encoded from a decoded tuple differs from the key of the same values")
	}
	if string(EncodeKey([][]byte{[]byte("a"), []byte("bc")})) == string(EncodeKey([][]byte{[]byte("ab"), []byte("c")})) {
		t.Error("keys with different column boundaries encode alike")
	}
	if string(EncodeKey([][]byte{nil})) == string(EncodeKey([][]byte{{}})) {
		t.Error("NULL and the empty string encode alike")
	}
}
