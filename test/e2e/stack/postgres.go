package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Databases created at start: the worker's source and buffer.
const (
	SourceDB = "source"
	BufferDB = "buffer"
)

// postgresBinDir is PostgreSQL's server binary folder (pg_config --bindir).
func postgresBinDir() (string, error) {
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		return "", fmt.Errorf("pg_config --bindir (install postgresql): %w", err)
	}
	dir := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(dir, "postgres")); err != nil {
		return "", fmt.Errorf("postgres server binary: %w", err)
	}
	return dir, nil
}

// postgresCredential runs PostgreSQL as the postgres system user: it refuses
// to run as root.
func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("postgres system user: %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("postgres uid: %w", err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("postgres gid: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (s *Stack) startPostgres(ctx context.Context) (*process, error) {
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(s.Dir, "postgres")
	sock := filepath.Join(s.Dir, "pgsock")
	for _, d := range []string{data, sock} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
		if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("chown %s: %w", d, err)
		}
	}
	initdb := exec.CommandContext(ctx, filepath.Join(s.bins.PGBin, "initdb"),
		"-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = data
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	return s.startProcess("postgres", filepath.Join(s.bins.PGBin, "postgres"), []string{
		"-D", data,
		"-c", "listen_addresses=" + PostgresHost,
		"-c", "port=" + strconv.Itoa(PostgresPort),
		"-c", "unix_socket_directories=" + sock,
		"-c", "wal_level=logical",
		"-c", "max_replication_slots=16",
		"-c", "max_wal_senders=16",
		"-c", "max_connections=200",
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
	}, nil, cred)
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
