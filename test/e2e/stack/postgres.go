package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/philotes/philotes-worker/test/pgtest"
)

// Databases created at start: the worker's source and buffer.
const (
	SourceDB = "source"
	BufferDB = "buffer"
)

// startPostgres starts PostgreSQL as test/pgtest prepares it (binaries found as there, wal_level=logical,
// fsync off, the postgres system user when root) with its data and socket under <dir>/postgres, on the fixed
// PostgresHost:PostgresPort of the namespace. It stops on SIGINT (fast shutdown), as pgtest's servers do.
func (s *Stack) startPostgres(ctx context.Context) (*process, error) {
	bin, args, cred, err := pgtest.Prepare(ctx, filepath.Join(s.Dir, "postgres"), PostgresPort, pgtest.Options{})
	if err != nil {
		return nil, err
	}
	p, err := s.startProcess("postgres", bin, args, nil, cred)
	if err != nil {
		return nil, err
	}
	p.stopSignal = syscall.SIGINT
	return p, nil
}

// PostgresURL is the URL of database db as the postgres superuser (trust
// authentication on loopback; it has the REPLICATION attribute).
func PostgresURL(db string) string {
	return fmt.Sprintf("postgres://postgres@%s:%d/%s?sslmode=disable", PostgresHost, PostgresPort, db)
}

// ConnectPostgres opens a connection to db through the namespace.
func (s *Stack) ConnectPostgres(ctx context.Context, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(PostgresURL(db))
	if err != nil {
		return nil, fmt.Errorf("parse postgres url: %w", err)
	}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return s.NS.DialContext(ctx, network, addr)
	}
	cfg.LookupFunc = func(ctx context.Context, host string) ([]string, error) { return []string{host}, nil }
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", db, err)
	}
	return conn, nil
}

// waitPostgres waits for PostgreSQL to accept connections and creates the
// source and buffer databases.
func (s *Stack) waitPostgres(ctx context.Context, p *process) error {
	if err := s.waitFor(ctx, p, 60*time.Second, "postgres accepting connections", func(ctx context.Context) error {
		c, err := s.ConnectPostgres(ctx, "postgres")
		if err != nil {
			return err
		}
		return c.Close(ctx)
	}); err != nil {
		return err
	}
	c, err := s.ConnectPostgres(ctx, "postgres")
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var level string
	if err := c.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if level != "logical" {
		return fmt.Errorf("wal_level is %q, want logical", level)
	}
	for _, db := range []string{SourceDB, BufferDB} {
		if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.SQLState() != "42P04" {
				return fmt.Errorf("create database %s: %w", db, err)
			}
		}
	}
	return nil
}
