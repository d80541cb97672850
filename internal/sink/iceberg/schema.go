package iceberg

import (
	"fmt"

	"github.com/apache/iceberg-go"

	"github.com/philotes/philotes-worker/internal/change"
)

// PostgreSQL type OIDs (pg_type.oid) that map to a typed Iceberg column. Every other type is written as the
// string of its text form.
const (
	oidBool        = 16
	oidBytea       = 17
	oidName        = 19
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidBpchar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTime        = 1083
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidNumeric     = 1700
	oidUUID        = 2950
	oidJSONB       = 3802
)

// The change columns every table carries after its data columns.
const (
	colOp         = "_op"
	colLSN        = "_lsn"
	colCommitLSN  = "_commit_lsn"
	colSeq        = "_seq"
	colCommitTime = "_commit_time"
)

// changeColumns are the change columns in table order, with their Iceberg types. They are required: every
// row has them.
var changeColumns = [...]struct {
	name string
	typ  iceberg.Type
}{
	{colOp, iceberg.PrimitiveTypes.String},
	{colLSN, iceberg.PrimitiveTypes.Int64},
	{colCommitLSN, iceberg.PrimitiveTypes.Int64},
	{colSeq, iceberg.PrimitiveTypes.Int32},
	{colCommitTime, iceberg.PrimitiveTypes.TimestampTz},
}

// checkColumns refuses a source table with a column named like a change column: its changes cannot be written.
func checkColumns(t change.Table) error {
	for _, c := range t.Columns {
		if isChangeColumn(c.Name) {
			return change.Unwritable(fmt.Errorf("source column %q clashes with a change column of the same name", c.Name))
		}
	}
	return nil
}

func isChangeColumn(name string) bool {
	for _, c := range changeColumns {
		if c.name == name {
			return true
		}
	}
	return false
}

// icebergType maps a PostgreSQL column type to the Iceberg type its text-format values are written as.
func icebergType(col change.Column) iceberg.Type {
	switch col.TypeOID {
	case oidBool:
		return iceberg.PrimitiveTypes.Bool
	case oidInt2, oidInt4:
		return iceberg.PrimitiveTypes.Int32
	case oidInt8:
		return iceberg.PrimitiveTypes.Int64
	case oidFloat4:
		return iceberg.PrimitiveTypes.Float32
	case oidFloat8:
		return iceberg.PrimitiveTypes.Float64
	case oidNumeric:
		if p, s, ok := numericPrecisionScale(col.TypeMod); ok {
			return iceberg.DecimalTypeOf(p, s)
		}
		return iceberg.PrimitiveTypes.String
	case oidDate:
		return iceberg.PrimitiveTypes.Date
	case oidTime:
		return iceberg.PrimitiveTypes.Time
	case oidTimestamp:
		return iceberg.PrimitiveTypes.Timestamp
	case oidTimestamptz:
		return iceberg.PrimitiveTypes.TimestampTz
	case oidUUID:
		return iceberg.PrimitiveTypes.UUID
	case oidBytea:
		return iceberg.PrimitiveTypes.Binary
	default: // text, varchar, bpchar, name, json, jsonb, arrays, enums, inet, interval, ...
		return iceberg.PrimitiveTypes.String
	}
}

// numericPrecisionScale decodes a numeric typmod ((precision << 16 | scale) + VARHDRSZ). It reports false for
// unbounded numerics and for precisions or scales Iceberg's decimal cannot hold (precision > 38, negative
// scale, scale > precision).
func numericPrecisionScale(typmod int32) (precision, scale int, ok bool) {
	const varhdrsz = 4
	if typmod < varhdrsz {
		return 0, 0, false
	}
	t := typmod - varhdrsz
	precision = int((t >> 16) & 0xffff)
	// PostgreSQL 15+ stores the scale as an 11-bit signed number.
	scale = int(((t & 0x7ff) ^ 1024) - 1024)
	if precision < 1 || precision > 38 || scale < 0 || scale > precision {
		return 0, 0, false
	}
	return precision, scale, true
}

// newTableSchema builds the Iceberg schema for a source table: its columns (all optional, since deletes carry
// only the key) followed by the change columns.
func newTableSchema(t change.Table) (*iceberg.Schema, error) {
	if err := checkColumns(t); err != nil {
		return nil, err
	}
	fields := make([]iceberg.NestedField, 0, len(t.Columns)+len(changeColumns))
	for _, c := range t.Columns {
		fields = append(fields, iceberg.NestedField{
			ID: len(fields) + 1, Name: c.Name, Type: icebergType(c), Required: false,
		})
	}
	for _, c := range changeColumns {
		fields = append(fields, iceberg.NestedField{ID: len(fields) + 1, Name: c.name, Type: c.typ, Required: true})
	}
	return iceberg.NewSchema(0, fields...), nil
}

// schemaChanges compares a source table with the Iceberg schema. It returns the source columns the schema
// lacks, in source order, and those whose type widened in a way Iceberg can follow (int to long, float to
// double, a decimal's precision). Other type changes are not followed: values keep being parsed as the
// Iceberg column's type.
func schemaChanges(sc *iceberg.Schema, t change.Table) (add, promote []change.Column) {
	for _, c := range t.Columns {
		f, ok := sc.FindFieldByName(c.Name)
		if !ok {
			add = append(add, c)
			continue
		}
		want := icebergType(c)
		if f.Type.Equals(want) {
			continue
		}
		switch f.Type.(type) {
		case iceberg.Int32Type, iceberg.Float32Type, iceberg.DecimalType:
			if _, err := iceberg.PromoteType(f.Type, want); err == nil {
				promote = append(promote, c)
			}
		}
	}
	return add, promote
}
