package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/runner"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

func connect(t testing.TB) *nats.Conn {
	t.Helper()
	testenv.RequireNATS(t)
	nc, err := nats.Connect(testenv.NATSURL, nats.Name("worker-test"), nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatalf("connect to NATS at %s: %v (start it with `nats-server -js`)", testenv.NATSURL, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// prefix is a subject prefix of the test's own; its payload bucket, if a
// test made one, goes when the test ends.
func prefix(t testing.TB, nc *nats.Conn) string {
	p := testenv.Prefix(t)
	t.Cleanup(func() {
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteObjectStore(ctx, protocol.PayloadBucket(p))
	})
	return p
}

var errNoBlob = errors.New("blob not found")

// blobs is a BlobSource over a map, keyed by the bytes' SHA-256.
type blobs map[string][]byte

func blobsOf(modules ...[]byte) (blobs, []string) {
	b := blobs{}
	var shas []string
	for _, m := range modules {
		sum := sha256.Sum256(m)
		sha := hex.EncodeToString(sum[:])
		b[sha] = m
		shas = append(shas, sha)
	}
	return b, shas
}

func (b blobs) BlobBytes(_ context.Context, sha string) ([]byte, error) {
	if m, ok := b[sha]; ok {
		return m, nil
	}
	return nil, fmt.Errorf("blob %s: %w", sha, errNoBlob)
}

// execFunc is an Executor made of a function.
type execFunc func(context.Context, runner.Execution, runner.Loader) (runner.Result, error)

func (f execFunc) Run(ctx context.Context, ex runner.Execution, load runner.Loader) (runner.Result, error) {
	return f(ctx, ex, load)
}

type harness struct {
	nc     *nats.Conn
	prefix string
	client *protocol.Client
}

func newHarness(t testing.TB) *harness {
	nc := connect(t)
	p := prefix(t, nc)
	c, err := protocol.NewClient(nc, p)
	if err != nil {
		t.Fatalf("protocol.NewClient error = %v", err)
	}
	return &harness{nc: nc, prefix: p, client: c}
}

type workerOpts struct {
	id          string
	concurrency int
	blobs       BlobSource
	logs        io.Writer
	cfg         func(*Config)
}

// start runs a worker on a connection of its own until the test ends, and
// waits until it is subscribed. The returned channel yields Run's error.
func (h *harness) start(t testing.TB, exec Executor, o workerOpts) (*Worker, <-chan error) {
	t.Helper()
	if o.id == "" {
		o.id = "w-test"
	}
	if o.concurrency == 0 {
		o.concurrency = 2
	}
	if o.blobs == nil {
		o.blobs = blobs{}
	}
	var logger *slog.Logger
	if o.logs != nil {
		logger = slog.New(slog.NewJSONHandler(o.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	} else {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg := Config{
		Prefix: h.prefix, ID: o.id, Concurrency: o.concurrency,
		IsNotFound: func(err error) bool { return errors.Is(err, errNoBlob) },
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	w, err := New(connect(t), exec, o.blobs, logger, cfg)
	if err != nil {
		t.Fatalf("New error = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		// Unblock whatever a failed test left waiting.
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = w.Shutdown(sctx)
	})
	select {
	case <-w.Ready():
	case err := <-errc:
		t.Fatalf("Run error = %v", err)
	case <-time.After(10 * time.Second):
		t.Fatalf("worker not ready after 10s")
	}
	return w, errc
}

func request(sha string) protocol.Request {
	return protocol.Request{
		ExecutionID:      "0192f0c4-7a1e-7000-8000-00000000000a",
		RequestID:        "req-abc",
		ModuleID:         "0192f0c4-7a1e-7000-8000-00000000000b",
		ModuleSHA256:     sha,
		ModuleName:       "mod.wasm",
		Args:             []string{"a", "b"},
		Env:              map[string]string{"K": "v"},
		Timeout:          2 * time.Second,
		MemoryLimitBytes: 16 << 20,
		MaxOutputBytes:   1 << 20,
		Stdin:            []byte("input"),
	}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

const anySHA = "00000000000000000000000000000000000000000000000000000000000000aa"
