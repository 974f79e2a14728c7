package store_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

// TestPostgresOutageIsUnavailable stops a private PostgreSQL under an open
// store: every kind of call then fails with ErrUnavailable (the api's 503
// database_unavailable, the usage recorder's retry), both on a pooled
// connection that was in use when the server went (the server ended it;
// the store learns so only on its next use) and on the new connections
// tried after it; and the store works again once the server is back.
func TestPostgresOutageIsUnavailable(t *testing.T) {
	pg := testenv.StartPostgres(t)
	s, err := store.Open(context.Background(), pg.Database(t))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(s.Close)

	wasm := []byte("\x00asm\x01\x00\x00\x00 outage")
	calls := []struct {
		name string
		call func(context.Context) error
	}{
		{"Ping", s.Ping},
		{"CreateModule", func(ctx context.Context) error {
			_, err := s.CreateModule(ctx, newModule(t, "alice", "m", wasm), wasm)
			return err
		}},
		{"GetModule", func(ctx context.Context) error {
			_, err := s.GetModule(ctx, store.AllOwners(), uuid.Must(uuid.NewV7()))
			return err
		}},
		{"CreateKey", func(ctx context.Context) error {
			_, err := s.CreateKey(ctx, store.APIKey{ID: uuid.Must(uuid.NewV7()), Name: "k", Prefix: "wwz_abcd",
				Hash: uuid.New().NodeID(), Owner: "alice", Role: "user", Tier: "free", CreatedAt: time.Now()})
			return err
		}},
		{"InsertExecutions", func(ctx context.Context) error {
			return s.InsertExecutions(ctx, []store.Execution{{ID: uuid.Must(uuid.NewV7()), Owner: "alice",
				Status: "ok", CreatedAt: time.Now()}})
		}},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// Use the pool just before the stop, so that the call below
			// gets back the connection the server has just ended.
			if err := s.Ping(ctx); err != nil {
				t.Fatalf("Ping before the stop = %v", err)
			}
			pg.Stop()
			defer pg.Start()
			for _, when := range []string{"on the ended connection", "on a new connection"} {
				if err := c.call(ctx); !errors.Is(err, store.ErrUnavailable) {
					t.Errorf("%s %s without PostgreSQL = %v; want ErrUnavailable", c.name, when, err)
				}
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := calls[1].call(ctx); err != nil {
		t.Errorf("CreateModule once PostgreSQL is back = %v; want nil", err)
	}
}

// TestPostgresConnectionLostIsUnavailable cuts the connections between a
// store and PostgreSQL, as a crash or a network partition does (no
// goodbye, a reset), and refuses new ones: calls fail with ErrUnavailable,
// and work again when the way is open.
func TestPostgresConnectionLostIsUnavailable(t *testing.T) {
	dbURL := testenv.Database(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startCutProxy(t, u.Host)
	u.Host = proxy.addr()
	s, err := store.Open(context.Background(), u.String())
	if err != nil {
		t.Fatalf("open store through the proxy: %v", err)
	}
	t.Cleanup(s.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	insert := func() error {
		return s.InsertExecutions(ctx, []store.Execution{{ID: uuid.Must(uuid.NewV7()), Owner: "alice", Status: "ok", CreatedAt: time.Now()}})
	}
	if err := insert(); err != nil {
		t.Fatalf("InsertExecutions through the proxy = %v", err)
	}
	proxy.cut()
	for _, when := range []string{"on the cut connection", "on a new connection"} {
		if err := insert(); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("InsertExecutions %s = %v; want ErrUnavailable", when, err)
		}
	}
	proxy.open()
	if err := insert(); err != nil {
		t.Errorf("InsertExecutions once the way is open = %v; want nil", err)
	}
}

// cutProxy forwards TCP connections to PostgreSQL until cut: then it resets
// every connection it holds and drops new ones until opened again.
type cutProxy struct {
	ln       net.Listener
	upstream string

	mu    sync.Mutex
	down  bool
	conns []*net.TCPConn
}

func startCutProxy(t *testing.T, upstream string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, upstream: upstream}
	t.Cleanup(func() {
		ln.Close()
		p.cut()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c.(*net.TCPConn))
		}
	}()
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) serve(client *net.TCPConn) {
	p.mu.Lock()
	down := p.down
	p.mu.Unlock()
	if down {
		client.SetLinger(0)
		client.Close()
		return
	}
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		client.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, client, up.(*net.TCPConn))
	p.mu.Unlock()
	go func() { io.Copy(up, client); up.Close() }()
	io.Copy(client, up)
	client.Close()
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.SetLinger(0) // a reset, not a goodbye
		c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) open() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}
