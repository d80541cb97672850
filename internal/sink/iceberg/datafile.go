package iceberg

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/apache/iceberg-go"
)

// encodedDataFile is what a processor records of a data file, so that a committer in any replica can add it to
// the table without opening it. The tables this package creates are unpartitioned, so there is no partition
// tuple to carry.
type encodedDataFile struct {
	Path         string         `json:"path"`
	Format       string         `json:"format"`
	SpecID       int32          `json:"spec_id"`
	Records      int64          `json:"records"`
	Bytes        int64          `json:"bytes"`
	ColumnSizes  map[int]int64  `json:"column_sizes,omitempty"`
	ValueCounts  map[int]int64  `json:"value_counts,omitempty"`
	NullCounts   map[int]int64  `json:"null_counts,omitempty"`
	NaNCounts    map[int]int64  `json:"nan_counts,omitempty"`
	LowerBounds  map[int][]byte `json:"lower_bounds,omitempty"`
	UpperBounds  map[int][]byte `json:"upper_bounds,omitempty"`
	SplitOffsets []int64        `json:"split_offsets,omitempty"`
	SortOrderID  *int           `json:"sort_order_id,omitempty"`
}

func encodeDataFile(df iceberg.DataFile) ([]byte, error) {
	if df.ContentType() != iceberg.EntryContentData {
		return nil, fmt.Errorf("encode data file %s: content %s, want data", df.FilePath(), df.ContentType())
	}
	if len(df.Partition()) > 0 {
		return nil, fmt.Errorf("encode data file %s: partitioned tables are not supported", df.FilePath())
	}
	b, err := json.Marshal(encodedDataFile{
		Path:         df.FilePath(),
		Format:       string(df.FileFormat()),
		SpecID:       df.SpecID(),
		Records:      df.Count(),
		Bytes:        df.FileSizeBytes(),
		ColumnSizes:  df.ColumnSizes(),
		ValueCounts:  df.ValueCounts(),
		NullCounts:   df.NullValueCounts(),
		NaNCounts:    df.NaNValueCounts(),
		LowerBounds:  df.LowerBoundValues(),
		UpperBounds:  df.UpperBoundValues(),
		SplitOffsets: df.SplitOffsets(),
		SortOrderID:  df.SortOrderID(),
	})
	if err != nil {
		return nil, fmt.Errorf("encode data file %s: %w", df.FilePath(), err)
	}
	return b, nil
}

// decodeDataFile rebuilds a data file of the table whose current partition spec is spec.
func decodeDataFile(b []byte, spec iceberg.PartitionSpec) (iceberg.DataFile, error) {
	var e encodedDataFile
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("decode data file: %w", err)
	}
	if int32(spec.ID()) != e.SpecID {
		return nil, fmt.Errorf("decode data file %s: partition spec %d, the table's is %d", e.Path, e.SpecID, spec.ID())
	}
	fb, err := iceberg.NewDataFileBuilder(spec, iceberg.EntryContentData, e.Path, iceberg.FileFormat(e.Format),
		nil, nil, nil, e.Records, e.Bytes)
	if err != nil {
		return nil, fmt.Errorf("decode data file %s: %w", e.Path, err)
	}
	fb.ColumnSizes(e.ColumnSizes).ValueCounts(e.ValueCounts).NullValueCounts(e.NullCounts).
		NaNValueCounts(e.NaNCounts).LowerBoundValues(e.LowerBounds).UpperBoundValues(e.UpperBounds).
		SplitOffsets(e.SplitOffsets)
	if e.SortOrderID != nil {
		fb.SortOrderID(*e.SortOrderID)
	}
	return fb.Build(), nil
}

// dataFilePath is the path of an encoded data file.
func dataFilePath(b []byte) (string, error) {
	var e struct {
		Path string `json:"path"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return "", fmt.Errorf("decode data file path: %w", err)
	}
	if e.Path == "" {
		return "", errors.New("decode data file path: no path")
	}
	return e.Path, nil
}
