package buffer

// migrations build the buffer schema. Migrations only ever append; each runs once, in a transaction, under an
// advisory lock so that replicas starting together do not race.
var migrations = []string{
	// 1: the initial schema.
	`CREATE SCHEMA IF NOT EXISTS philotes;
CREATE TABLE philotes.meta (
	singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	buffer_id   uuid NOT NULL DEFAULT gen_random_uuid(),
	created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO philotes.meta DEFAULT VALUES;
-- Where each source's reader has got to: the last change appended, in commit order, and the next event ID.
-- Written in the same transaction as the events, so a replay from the slot skips what is already buffered.
-- Event IDs are handed out by the source's single reader: contiguous and in commit order.
CREATE TABLE philotes.sources (
	source      text PRIMARY KEY,
	commit_lsn  bigint NOT NULL,
	seq         integer NOT NULL,
	next_id     bigint NOT NULL,
	updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Source table schemas, one row per distinct column list seen in a relation message.
CREATE TABLE philotes.relations (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	source       text NOT NULL,
	relation_id  oid NOT NULL,
	schema_name  text NOT NULL,
	table_name   text NOT NULL,
	columns      jsonb NOT NULL,
	created_at   timestamptz NOT NULL DEFAULT now(),
	UNIQUE (source, relation_id, schema_name, table_name, columns)
);
-- Changes read from the slot and not yet committed to the sink, packed in chunks of consecutive events (see
-- chunk.go): one row per up to 256 events makes the single reader's COPY several times cheaper for the server
-- than a row per event. Row data stays pgoutput tuple bytes, decoded by the processors, which scale out.
CREATE TABLE philotes.event_chunks (
	source              text NOT NULL,
	id                  bigint NOT NULL,
	events              integer NOT NULL,
	oldest_commit_time  timestamptz NOT NULL,
	data                bytea NOT NULL,
	PRIMARY KEY (source, id)
);
-- Already compact binary: skip pglz compression.
ALTER TABLE philotes.event_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
COMMENT ON TABLE philotes.event_chunks IS 'Changes not yet committed to the sink; events id .. id+events-1 per row. sum(events) per source is the buffer depth.';
`,
	// 2: writers and a committer. Processors write Parquet data files and record them here in the transaction
	// that deletes their events; one committer per source commits them to Iceberg on a cadence.
	`CREATE SEQUENCE philotes.writer_leases;
-- A data-file write in flight: inserted (and committed) before a processor writes the files of one claim for
-- one table, deleted in the transaction that records them. The processor holds the session advisory lock
-- (hashtext('philotes.writer'), lease) while it lives, so a row whose lock is free belongs to a write that
-- can never be recorded: its files (named with write_uuid under location) are orphans, safe to remove.
CREATE TABLE philotes.file_writes (
	id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	source      text NOT NULL,
	lease       bigint NOT NULL,
	write_uuid  uuid NOT NULL,
	location    text NOT NULL,
	created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX file_writes_source_lease ON philotes.file_writes (source, lease);
-- Data files written and recorded by processors, not yet committed to Iceberg. The committer first sets
-- commit_seq (durably), then commits the files with the table property philotes.committed-seq = commit_seq,
-- then deletes the rows: a row whose commit_seq is at most the table's committed-seq is already in the table.
CREATE TABLE philotes.pending_files (
	id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	source              text NOT NULL,
	table_name          text NOT NULL,
	file                bytea NOT NULL,
	bytes               bigint NOT NULL,
	records             bigint NOT NULL,
	oldest_commit_time  timestamptz NOT NULL,
	max_commit_lsn      bigint NOT NULL,
	commit_seq          bigint,
	created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_files_source_table ON philotes.pending_files (source, table_name, id);
COMMENT ON TABLE philotes.pending_files IS 'Data files written to the warehouse and not yet committed to their Iceberg table; count(*) per source is the committer''s queue.';
-- The last commit sequence number the committer of each source handed out.
CREATE TABLE philotes.commit_seqs (
	source  text PRIMARY KEY,
	last    bigint NOT NULL
);
`,
	// 3: backfill of existing rows (see backfill.go). Chunks of a table are read in short snapshots on the
	// source and appended as snapshot events; the reader records which keys the stream changed meanwhile.
	`CREATE TABLE philotes.backfill_tables (
	source         text NOT NULL,
	relation_id    oid NOT NULL,
	schema_name    text NOT NULL,
	table_name     text NOT NULL,
	-- Each request of a table's backfill is a new run; chunks, marks and attempts carry it.
	run            bigint NOT NULL DEFAULT 1,
	key_columns    text[],
	-- Chunks are read only in snapshots whose xmin is above xid_floor: every transaction that committed before
	-- the start mark (tracking_from, set by the reader) is then visible to them.
	xid_floor      bigint,
	tracking_from  bigint,
	planned_to     text[],
	planned        boolean NOT NULL DEFAULT false,
	rows_estimate  bigint NOT NULL DEFAULT 0,
	rows_done      bigint NOT NULL DEFAULT 0,
	error          text,
	requested_at   timestamptz NOT NULL DEFAULT now(),
	done_at        timestamptz,
	PRIMARY KEY (source, relation_id)
);
COMMENT ON TABLE philotes.backfill_tables IS 'Backfills of existing rows, one row per source table; done_at IS NULL while one runs.';
-- Primary-key ranges of a table: (lower, upper], NULL meaning unbounded.
CREATE TABLE philotes.backfill_chunks (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	source       text NOT NULL,
	relation_id  oid NOT NULL,
	run          bigint NOT NULL,
	lower_key    text[],
	upper_key    text[],
	done         boolean NOT NULL DEFAULT false,
	rows         bigint
);
CREATE INDEX backfill_chunks_todo ON philotes.backfill_chunks (source, id) WHERE NOT done;
-- Keys that the stream changed in a table being backfilled, with the operation, the changing transaction
-- (full 64-bit ID) and its commit LSN; key NULL is a truncate, which covers every key. Dropped with the
-- table's backfill when it completes. (Every buffer table has a primary key: a FOR ALL TABLES publication in a
-- shared database would otherwise refuse its deletes.)
CREATE TABLE philotes.backfill_keys (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	source       text NOT NULL,
	relation_id  oid NOT NULL,
	key          bytea,
	op           "char" NOT NULL,
	xid          bigint NOT NULL,
	commit_lsn   bigint NOT NULL
);
CREATE INDEX backfill_keys_key ON philotes.backfill_keys (source, relation_id, key);
-- The reader's record of a chunk attempt's high watermark: where in the stream the chunk's rows belong.
CREATE TABLE philotes.backfill_marks (
	attempt     uuid PRIMARY KEY,
	source      text NOT NULL,
	lsn         bigint NOT NULL,
	created_at  timestamptz NOT NULL DEFAULT now()
);
-- Snapshot events take IDs from here, in blocks, far above the reader's IDs.
CREATE SEQUENCE philotes.snapshot_event_ids START 4611686018427387904 INCREMENT 1048576;
`,
	// 4: parked tables (see parked.go). A table whose changes cannot be written is parked: its events move out of
	// the chunks into parked_events, every other table keeps flowing, and processors retry it on a backoff.
	`CREATE TABLE philotes.parked_tables (
	source       text NOT NULL,
	schema_name  text NOT NULL,
	table_name   text NOT NULL,
	reason       text NOT NULL,
	parked_at    timestamptz NOT NULL DEFAULT now(),
	attempts     integer NOT NULL DEFAULT 0,
	retry_at     timestamptz NOT NULL,
	PRIMARY KEY (source, schema_name, table_name)
);
COMMENT ON TABLE philotes.parked_tables IS 'Source tables whose changes could not be written; their events wait in parked_events.';
-- The foreign key orders parking against unparking: a processor that parks events of a table another
-- processor has just unparked fails its claim (and writes them on its retry), and an unpark that would leave
-- newly parked events behind fails.
CREATE TABLE philotes.parked_events (
	source       text NOT NULL,
	id           bigint NOT NULL,
	schema_name  text NOT NULL,
	table_name   text NOT NULL,
	commit_lsn   bigint NOT NULL,
	seq          integer NOT NULL,
	lsn          bigint NOT NULL,
	commit_time  timestamptz NOT NULL,
	relation     bigint NOT NULL,
	op           "char" NOT NULL,
	tuple        bytea,
	old_tuple    bytea,
	PRIMARY KEY (source, id),
	FOREIGN KEY (source, schema_name, table_name) REFERENCES philotes.parked_tables
);
CREATE INDEX parked_events_table ON philotes.parked_events (source, schema_name, table_name, id);
`,
}
