package iceberg

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/iceberg-go/table"

	"github.com/philotes/philotes-worker/internal/change"
)

// Snapshot summary properties that make appends idempotent.
const (
	// PropBufferID names the buffer database instance whose event IDs the snapshot records.
	PropBufferID = "philotes.buffer-id"
	// PropEventIDs lists the event IDs appended to the table by the snapshot, as sorted ranges "lo-hi,lo-hi".
	PropEventIDs = "philotes.event-ids"
	// PropMaxEventID is the largest event ID in PropEventIDs; it lets a check skip snapshots that cannot overlap.
	PropMaxEventID = "philotes.max-event-id"
	// PropMaxCommitLSN is the largest source commit LSN appended by the snapshot, for monitoring.
	PropMaxCommitLSN = "philotes.max-commit-lsn"
)

// idRange is an inclusive range of event IDs.
type idRange struct{ lo, hi int64 }

// toRanges compresses event IDs into sorted, merged ranges. ids is sorted in place.
func toRanges(ids []int64) []idRange {
	slices.Sort(ids)
	var out []idRange
	for _, id := range ids {
		if n := len(out); n > 0 && id <= out[n-1].hi+1 {
			out[n-1].hi = max(out[n-1].hi, id)
			continue
		}
		out = append(out, idRange{id, id})
	}
	return out
}

func formatRanges(rs []idRange) string {
	var sb strings.Builder
	for i, r := range rs {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.FormatInt(r.lo, 10))
		sb.WriteByte('-')
		sb.WriteString(strconv.FormatInt(r.hi, 10))
	}
	return sb.String()
}

// parseRanges parses "lo-hi,lo-hi" (a lone "id" is accepted too) and appends the ranges to dst.
func parseRanges(dst []idRange, s string) ([]idRange, error) {
	if s == "" {
		return dst, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		if part == "" {
			return dst, fmt.Errorf("invalid event ID ranges %q: empty range", s)
		}
		loS, hiS := part, part
		if i := strings.IndexByte(part[1:], '-'); i >= 0 { // part[1:]: a leading '-' is a sign
			loS, hiS = part[:i+1], part[i+2:]
		}
		lo, err := strconv.ParseInt(loS, 10, 64)
		if err != nil {
			return dst, fmt.Errorf("invalid event ID range %q: %w", part, err)
		}
		hi, err := strconv.ParseInt(hiS, 10, 64)
		if err != nil || hi < lo {
			return dst, fmt.Errorf("invalid event ID range %q", part)
		}
		dst = append(dst, idRange{lo, hi})
	}
	return dst, nil
}

// writtenRanges returns the event ID ranges of this buffer already appended to the table by the snapshots
// on the current branch that can overlap [minID, maxID], sorted and merged. Snapshots of other buffers, and
// snapshots whose max-event-id is below minID, are skipped without parsing their ranges.
func writtenRanges(meta table.Metadata, bufferID string, minID, maxID int64) ([]idRange, error) {
	cur := meta.CurrentSnapshot()
	if cur == nil {
		return nil, nil
	}
	var out []idRange
	for _, snap := range table.AncestorsOf(cur.SnapshotID, meta.SnapshotByID) {
		if snap.Summary == nil || snap.Summary.Properties[PropBufferID] != bufferID {
			continue
		}
		props := snap.Summary.Properties
		if maxS, ok := props[PropMaxEventID]; ok {
			if m, err := strconv.ParseInt(maxS, 10, 64); err == nil && m < minID {
				continue
			}
		}
		var err error
		n := len(out)
		out, err = parseRanges(out, props[PropEventIDs])
		if err != nil {
			return nil, fmt.Errorf("snapshot %d: %w", snap.SnapshotID, err)
		}
		// Keep only the ranges that overlap the batch.
		kept := out[:n]
		for _, r := range out[n:] {
			if r.hi >= minID && r.lo <= maxID {
				kept = append(kept, r)
			}
		}
		out = kept
	}
	return mergeRanges(out), nil
}

// mergeRanges sorts ranges and merges overlapping or adjacent ones, in place.
func mergeRanges(rs []idRange) []idRange {
	slices.SortFunc(rs, func(a, b idRange) int { return cmp.Compare(a.lo, b.lo) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && r.lo <= out[n-1].hi+1 {
			out[n-1].hi = max(out[n-1].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// covered reports whether id lies in one of the ranges, which are sorted and disjoint.
func covered(rs []idRange, id int64) bool {
	i, found := slices.BinarySearchFunc(rs, id, func(r idRange, id int64) int { return cmp.Compare(r.lo, id) })
	if found {
		return true
	}
	return i > 0 && rs[i-1].hi >= id
}

// pendingChanges returns the changes whose event IDs are not in written: changes itself when none are, a new
// slice otherwise.
func pendingChanges(changes []change.Change, written []idRange) []change.Change {
	if len(written) == 0 {
		return changes
	}
	var out []change.Change
	for i := range changes {
		if covered(written, changes[i].EventID) {
			if out == nil {
				out = make([]change.Change, 0, len(changes))
				out = append(out, changes[:i]...)
			}
			continue
		}
		if out != nil {
			out = append(out, changes[i])
		}
	}
	if out == nil {
		return changes
	}
	return out
}
