// Package store is the only package that speaks SQL. It sits at the bottom
// of the graph beside config: it turns pgx errors into its own (ErrNotFound,
// ErrConflict) at its boundary and never logs.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	// ErrNotFound means the row does not exist or belongs to another owner.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a unique constraint refused the write.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable means PostgreSQL could not be reached.
	ErrUnavailable = errors.New("database unavailable")
)

// Store wraps a pgx pool.
type Store struct {
	pool *pgxpool.Pool
}

// Open connects to PostgreSQL and checks the connection.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parse error can echo the URL, password included.
		return nil, errors.New("parse DATABASE_URL: invalid connection string")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	s := &Store{pool: pool}
	if err := s.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close waits for queries in flight, then closes every connection.
func (s *Store) Close() { s.pool.Close() }

// Ping checks that PostgreSQL answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping database: %w", wrap(err))
	}
	return nil
}

// Scope says whose rows a query may see: one owner's, or everyone's (admin).
type Scope struct {
	owner string
	all   bool
}

// Owner scopes a query to one owner's rows.
func Owner(owner string) Scope { return Scope{owner: owner} }

// AllOwners scopes a query to every owner's rows.
func AllOwners() Scope { return Scope{all: true} }

// wrap maps driver errors onto the store's own.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	if unreachable(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return fmt.Errorf("%w: %s", ErrConflict, pgErr.ConstraintName)
	}
	return err
}

// unreachable reports a failure of the way to PostgreSQL rather than of the
// statement: no connection could be made (refused, or refused by a server
// starting up, shutting down or full), or the server ended or lost the
// connection. A pooled connection learns that the server shut down only on
// its next use, from the goodbye the server left (57P01) or from a dead
// socket; both mean the same to a caller as a refused connection.
func unreachable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// The caller's own deadline or departure, mapped on their own.
		return false
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03": // admin_shutdown, crash_shutdown, cannot_connect_now
			return true
		}
		// Class 08: connection exception.
		return strings.HasPrefix(pgErr.Code, "08")
	}
	if pgconn.SafeToRetry(err) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
