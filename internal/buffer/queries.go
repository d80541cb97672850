package buffer

import "strings"

// DepthSQL is the buffer depth of source $1: the events not yet written to data files, the processors' work
// queue. It is what philotes_buffer_depth reports, and what a KEDA PostgreSQL trigger on the buffer database may
// run (DepthQuery). Parked tables' events are not in it.
const DepthSQL = `SELECT COALESCE(sum(events), 0) FROM philotes.event_chunks WHERE source = $1`

// DepthQuery is DepthSQL for one source, as a query with no parameters (a KEDA trigger takes no parameters).
func DepthQuery(source string) string {
	return strings.Replace(DepthSQL, "$1", "'"+strings.ReplaceAll(source, "'", "''")+"'", 1)
}

// Schema is the buffer's schema: every table of the buffer is in it.
const Schema = "philotes"

// Owns reports whether schema.table is one of the buffer's own tables, whose changes are never replicated.
func Owns(schema, _ string) bool { return schema == Schema }
