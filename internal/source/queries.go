package source

import "strings"

// RetainedWALSQL is the WAL, in bytes, that slot $1 has not confirmed, or $2 when the slot does not exist or
// never confirmed anything. The source database answers it with no worker running: it grows with every change
// while no reader runs, which is what wakes a release scaled to zero (the chart's KEDA PostgreSQL trigger runs
// RetainedWALQuery with the trigger's target as $2, so a missing slot wakes one replica, which creates it).
const RetainedWALSQL = `SELECT COALESCE((SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = $1), $2)`

// RetainedWALQuery is RetainedWALSQL for one slot and fallback, as a query with no parameters.
func RetainedWALQuery(slot, ifMissing string) string {
	q := strings.Replace(RetainedWALSQL, "$1", quoteLiteral(slot), 1)
	return strings.Replace(q, "$2", ifMissing, 1)
}
