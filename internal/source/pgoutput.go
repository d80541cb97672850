package source

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/philotes/philotes-worker/internal/change"
)

// The reader is the one part of the system that cannot scale out, so it parses pgoutput messages only as far as
// it must: transaction boundaries, relation IDs and where each tuple starts and ends. The tuple bytes are stored
// as they are and decoded into column values by DecodeTuple in the processors.

var errShort = errors.New("pgoutput: message too short")

var postgresEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func pgTime(micros int64) time.Time {
	return postgresEpoch.Add(time.Duration(micros) * time.Microsecond)
}

// begin is a Begin message: the transaction's commit LSN is known up front.
type begin struct {
	finalLSN   uint64
	commitTime time.Time
	xid        uint32
}

func parseBegin(b []byte) (begin, error) {
	if len(b) < 1+8+8+4 {
		return begin{}, fmt.Errorf("begin: %w", errShort)
	}
	return begin{
		finalLSN:   binary.BigEndian.Uint64(b[1:]),
		commitTime: pgTime(int64(binary.BigEndian.Uint64(b[9:]))),
		xid:        binary.BigEndian.Uint32(b[17:]),
	}, nil
}

// commit is a Commit message.
type commit struct {
	commitLSN, endLSN uint64
}

func parseCommit(b []byte) (commit, error) {
	if len(b) < 1+1+8+8+8 {
		return commit{}, fmt.Errorf("commit: %w", errShort)
	}
	return commit{commitLSN: binary.BigEndian.Uint64(b[2:]), endLSN: binary.BigEndian.Uint64(b[10:])}, nil
}

// message is a logical decoding message (pg_logical_emit_message).
type message struct {
	transactional bool
	lsn           uint64
	prefix        string
	content       []byte
}

func parseMessage(b []byte) (message, error) {
	if len(b) < 1+1+8+1+4 {
		return message{}, fmt.Errorf("message: %w", errShort)
	}
	m := message{transactional: b[1]&1 == 1, lsn: binary.BigEndian.Uint64(b[2:])}
	rest := b[10:]
	end := bytes.IndexByte(rest, 0)
	if end < 0 || len(rest) < end+1+4 {
		return message{}, fmt.Errorf("message: %w", errShort)
	}
	m.prefix = string(rest[:end])
	rest = rest[end+1:]
	n := int(binary.BigEndian.Uint32(rest))
	if len(rest) < 4+n {
		return message{}, fmt.Errorf("message: %w", errShort)
	}
	m.content = rest[4 : 4+n]
	return m, nil
}

// rowChange is an Insert, Update or Delete message, framed: tuple slices point into the message.
type rowChange struct {
	op       change.Op
	relation uint32
	tuple    []byte // new tuple (insert, update)
	oldTuple []byte // old key or old row (update with REPLICA IDENTITY, delete)
}

func parseRowChange(b []byte) (rowChange, error) {
	if len(b) < 1+4+1 {
		return rowChange{}, fmt.Errorf("%c: %w", b[0], errShort)
	}
	rc := rowChange{op: change.Op(b[0]), relation: binary.BigEndian.Uint32(b[1:])}
	rest := b[5:]
	for len(rest) > 0 {
		kind := rest[0]
		n, err := tupleLen(rest[1:])
		if err != nil {
			return rowChange{}, fmt.Errorf("%s on relation %d: %w", rc.op, rc.relation, err)
		}
		t := rest[1 : 1+n]
		switch kind {
		case 'N':
			rc.tuple = t
		case 'K', 'O':
			rc.oldTuple = t
		default:
			return rowChange{}, fmt.Errorf("%s on relation %d: unexpected tuple marker %q", rc.op, rc.relation, kind)
		}
		rest = rest[1+n:]
	}
	return rc, nil
}

// tupleLen returns the length of the TupleData at the start of b.
func tupleLen(b []byte) (int, error) {
	if len(b) < 2 {
		return 0, errShort
	}
	cols := int(binary.BigEndian.Uint16(b))
	off := 2
	for i := 0; i < cols; i++ {
		if off >= len(b) {
			return 0, errShort
		}
		switch b[off] {
		case 'n', 'u':
			off++
		case 't', 'b':
			if off+5 > len(b) {
				return 0, errShort
			}
			n := int(binary.BigEndian.Uint32(b[off+1:]))
			off += 5 + n
			if off > len(b) {
				return 0, errShort
			}
		default:
			return 0, fmt.Errorf("pgoutput: unknown column kind %q", b[off])
		}
	}
	return off, nil
}

func parseTruncate(b []byte) ([]uint32, error) {
	if len(b) < 1+4+1 {
		return nil, fmt.Errorf("truncate: %w", errShort)
	}
	n := int(binary.BigEndian.Uint32(b[1:]))
	if len(b) < 6+4*n {
		return nil, fmt.Errorf("truncate: %w", errShort)
	}
	ids := make([]uint32, n)
	for i := range ids {
		ids[i] = binary.BigEndian.Uint32(b[6+4*i:])
	}
	return ids, nil
}

// parseRelation decodes a Relation message into the table it describes.
func parseRelation(b []byte) (uint32, change.Table, error) {
	var m pglogrepl.RelationMessage
	if err := m.Decode(b[1:]); err != nil {
		return 0, change.Table{}, fmt.Errorf("relation: %w", err)
	}
	t := change.Table{Schema: m.Namespace, Name: m.RelationName, Columns: make([]change.Column, len(m.Columns))}
	for i, c := range m.Columns {
		t.Columns[i] = change.Column{Name: c.Name, TypeOID: c.DataType, TypeMod: c.TypeModifier, Key: c.Flags&1 != 0}
	}
	return m.RelationID, t, nil
}

// DecodeTuple splits pgoutput TupleData into column values (text format). The values point into b. dst is reused
// when it has room.
func DecodeTuple(b []byte, dst []change.Value) ([]change.Value, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("tuple: %w", errShort)
	}
	cols := int(binary.BigEndian.Uint16(b))
	dst = dst[:0]
	off := 2
	for i := 0; i < cols; i++ {
		if off >= len(b) {
			return nil, fmt.Errorf("tuple column %d: %w", i, errShort)
		}
		switch b[off] {
		case 'n':
			dst = append(dst, change.Value{Null: true})
			off++
		case 'u':
			dst = append(dst, change.Value{Null: true, Unchanged: true})
			off++
		case 't':
			if off+5 > len(b) {
				return nil, fmt.Errorf("tuple column %d: %w", i, errShort)
			}
			n := int(binary.BigEndian.Uint32(b[off+1:]))
			if off+5+n > len(b) {
				return nil, fmt.Errorf("tuple column %d: %w", i, errShort)
			}
			dst = append(dst, change.Value{Text: b[off+5 : off+5+n]})
			off += 5 + n
		default:
			return nil, fmt.Errorf("tuple column %d: unsupported column kind %q (the worker asks for text format)", i, b[off])
		}
	}
	return dst, nil
}
