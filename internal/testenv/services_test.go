package testenv_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

// TestStartNATSRestartKeepsPortAndStore: a private server comes back on the
// same URL with its JetStream data, and its clients reconnect to it.
func TestStartNATSRestartKeepsPortAndStore(t *testing.T) {
	srv := testenv.StartNATS(t)
	reconnected := make(chan struct{}, 1)
	nc, err := nats.Connect(srv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	if err != nil {
		t.Fatalf("connect to the private NATS: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "kept", Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("create a bucket: %v", err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("put: %v", err)
	}

	srv.Restart(100 * time.Millisecond)
	select {
	case <-reconnected:
	case <-ctx.Done():
		t.Fatalf("client did not reconnect to the restarted server at %s", srv.URL())
	}
	kv, err = js.KeyValue(ctx, "kept")
	if err != nil {
		t.Fatalf("bucket after the restart: %v", err)
	}
	if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
		t.Errorf("value after the restart = %v; want v", err)
	}
}

// TestStartPostgresStopAndStart: a private cluster refuses connections
// while stopped and comes back on the same URL with its data.
func TestStartPostgresStopAndStart(t *testing.T) {
	pg := testenv.StartPostgres(t)
	dbURL := pg.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exec := func(sql string) error {
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec(`CREATE TABLE kept (v text); INSERT INTO kept VALUES ('v')`); err != nil {
		t.Fatalf("write to the private PostgreSQL: %v", err)
	}
	var n int
	if err := pgxQueryRow(ctx, dbURL, `SELECT count(*) FROM goose_db_version WHERE version_id > 0`, &n); err != nil || n == 0 {
		t.Errorf("migrations on the private database: %d applied, %v; want some", n, err)
	}
	pg.Stop()
	if err := exec(`SELECT 1`); err == nil {
		t.Errorf("query while stopped succeeded; want a refused connection")
	}
	pg.Start()
	var v string
	if err := pgxQueryRow(ctx, dbURL, `SELECT v FROM kept`, &v); err != nil || v != "v" {
		t.Errorf("row after the restart = %q, %v; want v", v, err)
	}
}

func pgxQueryRow(ctx context.Context, url, sql string, dest any) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql).Scan(dest)
}

func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 100 {
		p := testenv.FreePort(t)
		if seen[p] {
			t.Fatalf("FreePort returned %d twice", p)
		}
		seen[p] = true
		if p < 20000 || p > 32767 {
			t.Errorf("FreePort = %d; want it in 20000-32767, below the ephemeral range", p)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("listen on FreePort's %d: %v", p, err)
		}
		ln.Close()
	}
}
