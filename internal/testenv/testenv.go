// Package testenv gives tests the machine's real services: a fresh,
// migrated PostgreSQL database per call, and checks that Redis and NATS
// answer. A missing service fails the test with the command that starts it;
// tests never skip. Only _test files import this package.
package testenv

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wasmwiz/wasmwiz/internal/store"
)

// Addresses of the services, overridable for machines that run them elsewhere.
var (
	PostgresURL = envOr("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	RedisURL    = envOr("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
	NATSURL     = envOr("TEST_NATS_URL", "nats://127.0.0.1:4222")
)

const (
	startPostgres = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
	startRedis    = `redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no`
	startNATS     = "nats-server -a 127.0.0.1 -p 4222 -js (or scripts/services.sh)"
)

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Database creates an empty database with a unique name, applies the
// migrations, drops it when the test ends, and returns its URL.
func Database(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, PostgresURL)
	if err != nil {
		t.Fatalf("PostgreSQL is not reachable at %s (%v); start it with: %s", redact(PostgresURL), err, startPostgres)
	}
	defer admin.Close(ctx)

	name := "wwz_test_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:16]
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, PostgresURL)
		if err != nil {
			t.Errorf("drop test database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})

	u, _ := url.Parse(PostgresURL)
	u.Path = "/" + name
	dbURL := u.String()
	if _, err := store.Migrate(ctx, dbURL); err != nil {
		t.Fatalf("migrate test database: %v", err)
	}
	return dbURL
}

// Store opens a Store on a fresh database, closed when the test ends.
func Store(t testing.TB) (*store.Store, string) {
	t.Helper()
	dbURL := Database(t)
	s, err := store.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(s.Close)
	return s, dbURL
}

// RequireNATS fails the test unless NATS answers.
func RequireNATS(t testing.TB) {
	t.Helper()
	requireTCP(t, "NATS", NATSURL, startNATS)
}

// RequireRedis fails the test unless Redis answers.
func RequireRedis(t testing.TB) {
	t.Helper()
	requireTCP(t, "Redis", RedisURL, startRedis)
}

func requireTCP(t testing.TB, what, rawURL, start string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("bad %s URL %q: %v", what, rawURL, err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err != nil {
		t.Fatalf("%s is not reachable at %s (%v); start it with: %s", what, u.Host, err, start)
	}
	conn.Close()
}

// Prefix returns a NATS subject prefix unique to this test, so that tests
// and packages running at once never see each other's messages.
func Prefix(t testing.TB) string {
	return fmt.Sprintf("wwzt_%s", strings.ReplaceAll(uuid.NewString(), "-", "")[:12])
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// Eventually polls cond until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
