// Package change holds the data model that flows one way through the worker: the source decodes logical
// replication into Changes, the buffer stores them, the sink writes them to the lake.
package change

import (
	"errors"
	"time"
)

// Op is the kind of a change.
type Op byte

// The operations, as pgoutput names them.
const (
	Insert   Op = 'I'
	Update   Op = 'U'
	Delete   Op = 'D'
	Truncate Op = 'T'
	// Snapshot is a row read by a backfill: the row as it was at its position in the changelog.
	Snapshot Op = 'S'
)

func (o Op) String() string {
	switch o {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	case Truncate:
		return "truncate"
	case Snapshot:
		return "snapshot"
	}
	return "unknown"
}

// Column is one column of a source table, as the relation message describes it.
type Column struct {
	Name    string `json:"name"`
	TypeOID uint32 `json:"type_oid"`
	TypeMod int32  `json:"type_mod"`
	Key     bool   `json:"key"`
}

// Table is a source table's identity and schema at the time of a change.
type Table struct {
	Schema  string   `json:"schema"`
	Name    string   `json:"name"`
	Columns []Column `json:"columns"`
}

// TableRef names a source table: its relation ID (the table's OID) and its name.
type TableRef struct {
	RelationID uint32
	Schema     string
	Name       string
	// Key names the columns that identify a row (nil when not known yet).
	Key []string
}

// Value is one column value in PostgreSQL's text output format.
type Value struct {
	Null bool
	// Unchanged marks an unchanged TOASTed value in an update: the source did not send it.
	Unchanged bool
	Text      []byte
}

// Change is one row change, decoded.
type Change struct {
	// EventID is the buffer's identifier of the change: unique within one buffer, increasing in commit order.
	EventID    int64
	Op         Op
	CommitLSN  uint64
	LSN        uint64
	Seq        int32
	CommitTime time.Time
	// Values follow Table.Columns: the new row for inserts and updates, the old key (or old row) for deletes,
	// nil for truncates.
	Values []Value
}

// TableChanges are the changes of one table in one batch, in commit order.
type TableChanges struct {
	Table   Table
	Changes []Change
}

// ErrUnwritable marks a failure that retrying the same changes cannot overcome while its cause stays: a source
// column the lake cannot take, a value that does not fit the lake column's type, a lake table that refuses the
// changes. The worker parks the table (its events wait in the buffer) and keeps the other tables flowing.
var ErrUnwritable = errors.New("the table's changes cannot be written")

// Unwritable marks err as ErrUnwritable, keeping its message.
func Unwritable(err error) error {
	if err == nil {
		return nil
	}
	return unwritable{err}
}

type unwritable struct{ error }

func (u unwritable) Unwrap() []error { return []error{u.error, ErrUnwritable} }
