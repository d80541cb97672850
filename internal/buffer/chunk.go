package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/philotes/philotes-worker/internal/change"
)

// A chunk packs consecutive events into one buffer row. Each event is, big-endian:
//
//	commit_lsn u64 | seq u32 | lsn u64 | commit_time i64 (µs since 2000-01-01 UTC) | relation i64 | op u8 |
//	tuple_len i32 (-1: none) | tuple | old_tuple_len i32 (-1: none) | old_tuple
//
// The event IDs of a chunk are its row's id, id+1, … in order.
const (
	// ChunkEvents is the most events in one chunk.
	ChunkEvents = 256
	// chunkBytes closes a chunk early once its data reaches this size.
	chunkBytes  = 256 << 10
	eventHeader = 8 + 4 + 8 + 8 + 8 + 1 + 4 + 4
)

var errCorruptChunk = errors.New("buffer: corrupt event chunk")

func (r *row) packedLen() int {
	return eventHeader + max(r.tupleN, 0) + max(r.oldN, 0)
}

// appendPacked writes one event in chunk format.
func appendPacked(out []byte, r *row, arena []byte) []byte {
	out = binary.BigEndian.AppendUint64(out, r.commitLSN)
	out = binary.BigEndian.AppendUint32(out, uint32(r.seq))
	out = binary.BigEndian.AppendUint64(out, r.lsn)
	out = binary.BigEndian.AppendUint64(out, uint64(r.commitTime.Sub(postgresEpoch).Microseconds()))
	out = binary.BigEndian.AppendUint64(out, uint64(r.relation))
	out = append(out, byte(r.op))
	for _, part := range [2][2]int{{r.tupleOff, r.tupleN}, {r.oldOff, r.oldN}} {
		out = binary.BigEndian.AppendUint32(out, uint32(int32(part[1])))
		if part[1] > 0 {
			out = append(out, arena[part[0]:part[0]+part[1]]...)
		}
	}
	return out
}

// unpackChunk decodes a chunk's events; their byte slices point into data.
func unpackChunk(dst []Event, firstID int64, n int, data []byte) ([]Event, error) {
	off := 0
	for i := 0; i < n; i++ {
		if len(data)-off < eventHeader-8 {
			return nil, fmt.Errorf("%w: event %d", errCorruptChunk, firstID+int64(i))
		}
		e := Event{ID: firstID + int64(i)}
		e.CommitLSN = binary.BigEndian.Uint64(data[off:])
		e.Seq = int32(binary.BigEndian.Uint32(data[off+8:]))
		e.LSN = binary.BigEndian.Uint64(data[off+12:])
		e.CommitTime = postgresEpoch.Add(time.Duration(int64(binary.BigEndian.Uint64(data[off+20:]))) * time.Microsecond)
		e.Relation = int64(binary.BigEndian.Uint64(data[off+28:]))
		e.Op = change.Op(data[off+36])
		off += 37
		for _, dstPart := range []*[]byte{&e.Tuple, &e.OldTuple} {
			if len(data)-off < 4 {
				return nil, fmt.Errorf("%w: event %d", errCorruptChunk, e.ID)
			}
			l := int(int32(binary.BigEndian.Uint32(data[off:])))
			off += 4
			if l < 0 {
				continue
			}
			if len(data)-off < l {
				return nil, fmt.Errorf("%w: event %d", errCorruptChunk, e.ID)
			}
			*dstPart = data[off : off+l : off+l]
			off += l
		}
		dst = append(dst, e)
	}
	if off != len(data) {
		return nil, fmt.Errorf("%w: %d trailing bytes after event %d", errCorruptChunk, len(data)-off, firstID+int64(n)-1)
	}
	return dst, nil
}
