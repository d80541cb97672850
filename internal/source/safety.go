package source

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrSourceConfig marks a problem with the source database's setup that retrying cannot fix (the message says
// what to change): the worker stops with exit status 2 instead of retrying forever.
var ErrSourceConfig = errors.New("the source database is not set up for replication as configured")

// noIdentitySQL lists, as "schema.table" text, the ordinary and partitioned tables among those selected by the
// WHERE condition cond (over pg_class c and pg_namespace n) that have no usable replica identity: identity
// "nothing", or "default" without a primary key, or "index" whose index is gone. PostgreSQL refuses UPDATE and
// DELETE on such a table once a publication that publishes updates or deletes includes it.
func noIdentitySQL(cond string) string {
	return `SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND (` + cond + `) AND (` + noIdentityCond + `)
ORDER BY 1`
}

// noIdentityCond is true for a table (pg_class c) without a usable replica identity.
const noIdentityCond = `c.relreplident = 'n'
   OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
   OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))`

// checkIdentity refuses tables without a usable replica identity: with them in the publication, the application's
// own UPDATE and DELETE statements fail ("cannot update table ... because it does not have a replica identity and
// publishes updates").
func checkIdentity(ctx context.Context, conn *pgconn.PgConn, cond, what string) error {
	bad, err := listNoIdentity(ctx, conn, cond)
	if err != nil {
		return fmt.Errorf("check the replica identity of %s: %w", what, err)
	}
	if len(bad) == 0 {
		return nil
	}
	shown := bad
	if len(shown) > 20 {
		shown = append(shown[:20:20], fmt.Sprintf("and %d more", len(bad)-20))
	}
	return fmt.Errorf("%w: %s include tables without a primary key or replica identity: %s. PostgreSQL refuses the "+
		"application's UPDATE and DELETE on such a table while a publication publishes it. For each table: add a "+
		"primary key, or ALTER TABLE ... REPLICA IDENTITY FULL (every column goes to the WAL), or leave it out with "+
		"PHILOTES_TABLES (a list of schema.table) or a publication you create yourself", ErrSourceConfig, what, strings.Join(shown, ", "))
}

// listNoIdentity lists, as "schema.table", the tables selected by cond without a usable replica identity.
func listNoIdentity(ctx context.Context, conn *pgconn.PgConn, cond string) ([]string, error) {
	res, err := conn.Exec(ctx, noIdentitySQL(cond)).ReadAll()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, row := range res[0].Rows {
		out = append(out, string(row[0]))
	}
	return out, nil
}

// publicationTablesCond selects the tables of an existing publication that publishes updates or deletes.
func publicationTablesCond(publication string) string {
	return `EXISTS (SELECT 1 FROM pg_publication p, pg_publication_tables t WHERE p.pubname = ` + quoteLiteral(publication) + `
  AND (p.pubupdate OR p.pubdelete) AND t.pubname = p.pubname AND t.schemaname = n.nspname AND t.tablename = c.relname)`
}

// allTablesCond selects the tables a new FOR ALL TABLES publication would publish: every user table.
const allTablesCond = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%' AND NOT c.relispartition`

// listedTablesCond selects the tables of PHILOTES_TABLES ("schema.table").
func listedTablesCond(tables []string) string {
	lits := make([]string, len(tables))
	for i, t := range tables {
		lits[i] = quoteLiteral(t)
	}
	return `n.nspname || '.' || c.relname IN (` + strings.Join(lits, ", ") + `)`
}

// checkSlot refuses a slot the server has invalidated (wal_status "lost": it retained more WAL than
// max_slot_wal_keep_size allows, and the WAL it needs is gone): the changes in that WAL can never be read, so the
// slot must be replaced and the lake reloaded. The message says how.
func checkSlot(ctx context.Context, conn *pgconn.PgConn, slot, publication string) error {
	status, err := queryText(ctx, conn, fmt.Sprintf("SELECT COALESCE(wal_status, '') FROM pg_replication_slots WHERE slot_name = %s", quoteLiteral(slot)))
	if err != nil {
		return fmt.Errorf("read the state of slot %s: %w", slot, err)
	}
	if status != "lost" {
		return nil
	}
	return fmt.Errorf("%w: replication slot %s (PHILOTES_SLOT) is invalidated (wal_status lost): it retained more WAL "+
		"than max_slot_wal_keep_size allows and the server removed WAL it still needed, so some changes can never "+
		"reach the lake. To recover: stop the workers, drop the slot (SELECT pg_drop_replication_slot(%s)), start "+
		"them again (a new slot is created), then reload the tables with philotes-worker backfill --tables "+
		"<the tables of publication %s> (every current row lands again as a snapshot row; a row deleted while changes were lost stays in the lake until removed there)", ErrSourceConfig, slot, quoteLiteral(slot), publication)
}
