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
	"sync"
	"time"

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

// DefaultConnectTimeout bounds the making of a connection, from dial to
// session, when DATABASE_URL sets no connect_timeout. Without it pgx waits
// as long as the kernel retries a SYN to a host that drops packets (about
// two minutes), or forever on a server that accepts and never answers;
// and a connection being made holds one of the pool's few slots.
const DefaultConnectTimeout = 5 * time.Second

// LookupTimeout bounds the point lookups every request makes (a key, a
// module; see Within). They answer in milliseconds, so one that has not
// answered in this time is stuck on a hung way to PostgreSQL, and the
// caller is better served by a stale answer or a 503 at once. Shorter than
// DefaultConnectTimeout: a connection still being made when a lookup gives
// up goes on being made for the next one.
const LookupTimeout = 2 * time.Second

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
	boundConnect(&cfg.ConnConfig.Config)
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

// boundConnect sets DefaultConnectTimeout where the URL left the timeout
// unset, or at 0 ("wait forever"): neither should let a partition hang a
// connection being made.
func boundConnect(c *pgconn.Config) {
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
}

// Within calls call with ctx bounded by d. When that bound, and not ctx
// itself, cuts the call short, the error is ErrUnavailable: PostgreSQL
// did not answer in time, which to the caller is the same as not being
// reachable (its stale fallbacks and 503 apply). When ctx ends first the
// error keeps its meaning (the caller's deadline, or its departure).
func Within[T any](ctx context.Context, d time.Duration, call func(context.Context) (T, error)) (T, error) {
	bctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	v, err := call(bctx)
	if err != nil && ctx.Err() == nil && errors.Is(bctx.Err(), context.DeadlineExceeded) &&
		!errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrNotFound) {
		// ErrNotFound is an answer that merely arrived at the bound.
		return v, fmt.Errorf("%w: no answer within %v: %w", ErrUnavailable, d, err)
	}
	return v, err
}

// Outage remembers that PostgreSQL was just found unavailable, so that a
// caller holding a usable stale answer uses it at once instead of waiting
// on a hung database again: a partition then costs one caller in a while
// the lookup timeout, rather than every caller. The zero value is ready.
type Outage struct {
	mu    sync.Mutex
	down  bool
	until time.Time // before this, skip the store; after, one caller asks
}

// outageWindow is how long after a failure stale answers are used without
// asking: short, as the store may be back.
const outageWindow = time.Second

// Skip reports whether a caller holding a usable stale answer should use
// it without asking the store. Once the window is over it answers false to
// one caller, which asks the store; the others keep skipping meanwhile,
// for up to probe (the time that caller may take).
func (o *Outage) Skip(now time.Time, probe time.Duration) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.down {
		return false
	}
	if now.Before(o.until) {
		return true
	}
	o.until = now.Add(probe)
	return false
}

// Report records the outcome of asking the store: ErrUnavailable opens a
// window, an answer (a row or ErrNotFound) ends the outage, and anything
// else (the caller's departure, a bad statement) says nothing either way.
func (o *Outage) Report(now time.Time, err error) {
	switch {
	case errors.Is(err, ErrUnavailable):
		o.mu.Lock()
		o.down, o.until = true, now.Add(outageWindow)
		o.mu.Unlock()
	case err == nil || errors.Is(err, ErrNotFound):
		o.mu.Lock()
		o.down = false
		o.mu.Unlock()
	}
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
