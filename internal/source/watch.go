package source

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/philotes/philotes-worker/internal/change"
	"github.com/philotes/philotes-worker/internal/metrics"
)

// A publication the worker creates without PHILOTES_TABLES lists the tables that have a replica identity, and
// carries managedComment. While it streams, the reader adds the tables created later that have one (after
// registering them for a backfill, so their existing rows land too) and leaves out, with a warning, those that
// have none: a FOR ALL TABLES publication would take them in and PostgreSQL would refuse the application's
// UPDATE and DELETE on them. A publication created by anyone else is left as it is.
const managedComment = "philotes: managed; tables with a replica identity are added as they are created"

// watchInterval is how often the reader reads the slot's state and looks for new tables (two catalog queries on
// the source). Changes to a new table before it joins arrive as its backfill's snapshot rows (the state they
// left), so the window is kept short.
const watchInterval = 2 * time.Second

// watch runs beside the stream while the reader holds the role, on a connection of its own, until ctx ends.
func (r *Reader) watch(ctx context.Context) {
	cfg, err := pgconn.ParseConfig(r.cfg.SourceURL)
	if err != nil {
		return
	}
	cfg.RuntimeParams["application_name"] = "philotes-reader-watch"
	var conn *pgconn.PgConn
	defer func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = conn.Close(cctx)
		}
	}()
	warned := map[string]bool{}
	var status string
	for {
		if conn == nil || conn.IsClosed() {
			conn, err = pgconn.ConnectConfig(ctx, cfg)
			if err != nil {
				conn = nil
				if ctx.Err() == nil {
					r.log.Warn("watch the slot: connect to source", "err", err)
				}
			}
		}
		if conn != nil {
			if err := r.watchSlot(ctx, conn, &status); err != nil && ctx.Err() == nil {
				r.log.Warn("read the slot's state", "err", err)
			}
			if err := r.addNewTables(ctx, conn, warned); err != nil && ctx.Err() == nil {
				r.log.Warn("add new tables to the publication", "publication", r.cfg.Publication, "err", err)
			}
		}
		t := time.NewTimer(watchInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// watchSlot exports the slot's wal_status, and logs when it turns to one that loses WAL (last is the status seen
// before).
func (r *Reader) watchSlot(ctx context.Context, conn *pgconn.PgConn, last *string) error {
	status, err := queryText(ctx, conn, "SELECT COALESCE(wal_status, '') FROM pg_replication_slots WHERE slot_name = "+quoteLiteral(r.cfg.Slot))
	if err != nil {
		return err
	}
	r.cfg.Metrics.SetSlotStatus(status)
	changed := status != *last
	*last = status
	if changed && (status == "unreserved" || status == "lost") {
		r.log.Error("the slot is about to lose or has lost WAL it needs: the server keeps no more than max_slot_wal_keep_size for it",
			"wal_status", status)
	}
	return nil
}

// addNewTables adds the tables created since the publication was, when the worker manages it.
func (r *Reader) addNewTables(ctx context.Context, conn *pgconn.PgConn, warned map[string]bool) error {
	managed, err := queryBool(ctx, conn, "SELECT COALESCE(obj_description(oid, 'pg_publication') = "+quoteLiteral(managedComment)+
		", false) FROM pg_publication WHERE pubname = "+quoteLiteral(r.cfg.Publication))
	if err != nil || !managed {
		return err
	}
	bad, err := r.noIdentity(ctx, conn, unpublishedCond(r.cfg.Publication))
	if err != nil {
		return err
	}
	for _, t := range bad {
		if !warned[t] {
			warned[t] = true
			r.log.Warn("a table without a primary key or replica identity is not published (PostgreSQL would refuse the application's UPDATE and DELETE on it): add a primary key or ALTER TABLE ... REPLICA IDENTITY FULL and it joins within seconds",
				"table", t, "publication", r.cfg.Publication)
		}
	}
	tables, err := r.tablesWhere(ctx, conn, unpublishedCond(r.cfg.Publication)+" AND NOT ("+noIdentityCond+")")
	if err != nil || len(tables) == 0 {
		return err
	}
	if r.cfg.Backfill {
		// Registered before they join, so the stream records their changed keys from their first change on.
		if _, err := r.store.RequestBackfill(ctx, tables, true); err != nil {
			return withKind(metrics.KindBuffer, err)
		}
	}
	for _, t := range tables {
		name := pgx.Identifier{t.Schema, t.Name}.Sanitize()
		err := conn.Exec(ctx, fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", pgx.Identifier{r.cfg.Publication}.Sanitize(), name)).Close()
		if err != nil {
			if name := t.Schema + "." + t.Name; !warned["add "+name] { // tried again every watch, said once
				warned["add "+name] = true
				r.log.Warn("could not add a new table to the publication: the worker's user must own the table (or create the publication yourself and add tables to it)",
					"table", name, "publication", r.cfg.Publication, "err", err)
			}
			continue
		}
		r.log.Info("added a new table to the publication", "table", t.Schema+"."+t.Name, "publication", r.cfg.Publication)
	}
	return nil
}

// publishedCond selects the tables publication publishes.
func publishedCond(publication string) string {
	return `EXISTS (SELECT 1 FROM pg_publication_tables t WHERE t.pubname = ` + quoteLiteral(publication) + `
  AND t.schemaname = n.nspname AND t.tablename = c.relname)`
}

// unpublishedCond selects the tables a FOR ALL TABLES publication would publish that publication does not.
func unpublishedCond(publication string) string {
	return allTablesCond + ` AND NOT ` + publishedCond(publication)
}

// noIdentity lists the tables selected by cond without a usable replica identity, leaving out the worker's own.
func (r *Reader) noIdentity(ctx context.Context, conn *pgconn.PgConn, cond string) ([]string, error) {
	all, err := listNoIdentity(ctx, conn, cond)
	var out []string
	for _, t := range all {
		schema, table, _ := strings.Cut(t, ".")
		if r.cfg.Skip == nil || !r.cfg.Skip(schema, table) {
			out = append(out, t)
		}
	}
	return out, err
}

// tablesWhere lists the ordinary and partitioned tables selected by cond with their keys, leaving out the
// worker's own.
func (r *Reader) tablesWhere(ctx context.Context, conn *pgconn.PgConn, cond string) ([]change.TableRef, error) {
	res, err := conn.Exec(ctx, `SELECT c.oid, n.nspname, c.relname, `+keyColumnsSQL("c.oid")+`
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND (`+cond+`) ORDER BY 2, 3`).ReadAll()
	if err != nil {
		return nil, err
	}
	var tables []change.TableRef
	for _, row := range res[0].Rows {
		oid, _ := strconv.ParseUint(string(row[0]), 10, 32)
		t := change.TableRef{RelationID: uint32(oid), Schema: string(row[1]), Name: string(row[2])}
		if r.cfg.Skip != nil && r.cfg.Skip(t.Schema, t.Name) {
			continue
		}
		if k := string(row[3]); k != "" {
			t.Key = strings.Split(k, keySeparator)
		}
		tables = append(tables, t)
	}
	return tables, nil
}
