package iceberg

import (
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/extensions"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/philotes/philotes-worker/internal/change"
)

// appendFunc parses one non-null PostgreSQL text value and appends it to b. It returns errNotRepresentable
// for values the Iceberg type cannot hold (numeric NaN, date and timestamp infinities), which are written as
// nulls.
type appendFunc func(b array.Builder, text []byte) error

// fieldWriter writes one top-level field of the Iceberg schema.
type fieldWriter struct {
	name string
	// change is the index into changeColumns for a change column, -1 for a data column.
	change int
	// appendText parses a data column's values.
	appendText appendFunc
}

// recordWriter builds the one Arrow record per table and batch, for one Iceberg schema. Its builders are
// reused from batch to batch; it is not safe for concurrent use.
type recordWriter struct {
	schemaID int
	schema   *arrow.Schema
	builder  *array.RecordBuilder
	fields   []fieldWriter
	srcIdx   []int // per field: index into the source columns, -1 when the source lacks it
}

func newRecordWriter(mem memory.Allocator, sc *iceberg.Schema) (*recordWriter, error) {
	asc, err := table.SchemaToArrowSchema(sc, nil, true, false)
	if err != nil {
		return nil, fmt.Errorf("convert schema %d to arrow: %w", sc.ID, err)
	}
	fields := sc.Fields()
	w := &recordWriter{
		schemaID: sc.ID,
		schema:   asc,
		fields:   make([]fieldWriter, len(fields)),
		srcIdx:   make([]int, len(fields)),
	}
	for i, f := range fields {
		fw := fieldWriter{name: f.Name, change: -1}
		for j, c := range changeColumns {
			if c.name == f.Name && f.Type.Equals(c.typ) {
				fw.change = j
			}
		}
		if fw.change < 0 {
			fw.appendText, err = appenderFor(f.Type)
			if err != nil {
				return nil, fmt.Errorf("column %q: %w", f.Name, err)
			}
		}
		w.fields[i] = fw
	}
	w.builder = array.NewRecordBuilder(mem, asc)
	return w, nil
}

func (w *recordWriter) release() { w.builder.Release() }

// build returns a record of the given changes of one source table. The caller releases the record.
func (w *recordWriter) build(t change.Table, changes []change.Change) (arrow.RecordBatch, error) {
	for i, f := range w.fields {
		w.srcIdx[i] = -1
		if f.change >= 0 {
			continue
		}
		for j, c := range t.Columns {
			if c.Name == f.name {
				w.srcIdx[i] = j
				break
			}
		}
	}
	w.builder.Reserve(len(changes))
	for i, f := range w.fields {
		b := w.builder.Field(i)
		var err error
		if f.change >= 0 {
			err = appendChangeColumn(b, changeColumns[f.change].name, changes)
		} else {
			err = appendDataColumn(b, f, w.srcIdx[i], changes)
		}
		if err != nil {
			// Discard the partial columns (of unequal lengths, so not as a record); the builders stay usable.
			for _, fb := range w.builder.Fields() {
				fb.NewArray().Release()
			}
			return nil, err
		}
	}
	return w.builder.NewRecordBatch(), nil
}

func appendDataColumn(b array.Builder, f fieldWriter, src int, changes []change.Change) error {
	if src < 0 {
		b.AppendNulls(len(changes))
		return nil
	}
	for k := range changes {
		ch := &changes[k]
		if src >= len(ch.Values) {
			b.AppendNull() // truncates carry no values
			continue
		}
		v := &ch.Values[src]
		if v.Null || v.Unchanged {
			b.AppendNull()
			continue
		}
		if err := f.appendText(b, v.Text); err != nil {
			if errors.Is(err, errNotRepresentable) {
				b.AppendNull()
				continue
			}
			return fmt.Errorf("column %q, event %d: %w", f.name, ch.EventID, err)
		}
	}
	return nil
}

func appendChangeColumn(b array.Builder, name string, changes []change.Change) error {
	switch name {
	case colOp:
		sb := b.(*array.StringBuilder)
		for k := range changes {
			sb.Append(changes[k].Op.String())
		}
	case colLSN, colCommitLSN:
		ib := b.(*array.Int64Builder)
		for k := range changes {
			lsn := changes[k].LSN
			if name == colCommitLSN {
				lsn = changes[k].CommitLSN
			}
			ib.UnsafeAppend(int64(lsn)) // reserved in build; LSNs stay far below 2^63
		}
	case colSeq:
		ib := b.(*array.Int32Builder)
		for k := range changes {
			ib.UnsafeAppend(changes[k].Seq)
		}
	case colCommitTime:
		tb := b.(*array.TimestampBuilder)
		for k := range changes {
			tb.UnsafeAppend(arrow.Timestamp(changes[k].CommitTime.UnixMicro()))
		}
	default:
		return fmt.Errorf("unknown change column %q", name)
	}
	return nil
}

// appenderFor returns the parser for values written to a column of Iceberg type t. The parser follows the
// Iceberg type, not the source type, so a table keeps working when a source column's type changes to one
// whose text form still parses.
func appenderFor(t iceberg.Type) (appendFunc, error) {
	switch t := t.(type) {
	case iceberg.BooleanType:
		return func(b array.Builder, s []byte) error {
			v, err := parseBool(s)
			if err == nil {
				b.(*array.BooleanBuilder).Append(v)
			}
			return err
		}, nil
	case iceberg.Int32Type:
		return func(b array.Builder, s []byte) error {
			v, err := parseInt(s, 32)
			if err == nil {
				b.(*array.Int32Builder).Append(int32(v))
			}
			return err
		}, nil
	case iceberg.Int64Type:
		return func(b array.Builder, s []byte) error {
			v, err := parseInt(s, 64)
			if err == nil {
				b.(*array.Int64Builder).Append(v)
			}
			return err
		}, nil
	case iceberg.Float32Type:
		return func(b array.Builder, s []byte) error {
			v, err := parseFloat(s, 32)
			if err == nil {
				b.(*array.Float32Builder).Append(float32(v))
			}
			return err
		}, nil
	case iceberg.Float64Type:
		return func(b array.Builder, s []byte) error {
			v, err := parseFloat(s, 64)
			if err == nil {
				b.(*array.Float64Builder).Append(v)
			}
			return err
		}, nil
	case iceberg.DecimalType:
		prec, scale := int32(t.Precision()), int32(t.Scale())
		return func(b array.Builder, s []byte) error {
			v, err := parseDecimal(s, prec, scale)
			if err == nil {
				b.(*array.Decimal128Builder).Append(v)
			}
			return err
		}, nil
	case iceberg.DateType:
		return func(b array.Builder, s []byte) error {
			v, err := parseDate(s)
			if err == nil {
				b.(*array.Date32Builder).Append(arrow.Date32(v))
			}
			return err
		}, nil
	case iceberg.TimeType:
		return func(b array.Builder, s []byte) error {
			v, err := parseTime(s)
			if err == nil {
				b.(*array.Time64Builder).Append(arrow.Time64(v))
			}
			return err
		}, nil
	case iceberg.TimestampType:
		return func(b array.Builder, s []byte) error {
			v, err := parseTimestamp(s, false)
			if err == nil {
				b.(*array.TimestampBuilder).Append(arrow.Timestamp(v))
			}
			return err
		}, nil
	case iceberg.TimestampTzType:
		return func(b array.Builder, s []byte) error {
			v, err := parseTimestamp(s, true)
			if err == nil {
				b.(*array.TimestampBuilder).Append(arrow.Timestamp(v))
			}
			return err
		}, nil
	case iceberg.UUIDType:
		return func(b array.Builder, s []byte) error {
			v, err := parseUUID(s)
			if err == nil {
				b.(*extensions.UUIDBuilder).Append(v)
			}
			return err
		}, nil
	case iceberg.BinaryType:
		var scratch []byte
		return func(b array.Builder, s []byte) error {
			var err error
			scratch, err = decodeBytea(scratch[:0], s)
			if err == nil {
				b.(*array.BinaryBuilder).Append(scratch) // copies
			}
			return err
		}, nil
	case iceberg.StringType:
		return func(b array.Builder, s []byte) error {
			b.(*array.StringBuilder).BinaryBuilder.Append(s) // copies, no string conversion
			return nil
		}, nil
	}
	return nil, fmt.Errorf("unsupported Iceberg column type %s", t)
}
