package usage_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
	"github.com/wasmwiz/wasmwiz/internal/usage"
)

var quiet = slog.New(slog.DiscardHandler)

// fast retries, so that failure tests take milliseconds.
var fast = usage.Options{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}

func execRecord(owner, status string, at time.Time) store.Execution {
	code := int32(0)
	return store.Execution{
		ID: uuid.Must(uuid.NewV7()), Owner: owner, KeyID: uuid.Must(uuid.NewV7()), ModuleID: uuid.Must(uuid.NewV7()),
		Status: status, ExitCode: &code, DurationMS: 1.5, QueueMS: 0.1, MemoryPeakBytes: 65536,
		BytesIn: 3, BytesOut: 5, Worker: "w1", RequestID: "req-1", CreatedAt: at,
	}
}

// countExecutions counts an owner's rows through the usage query.
func countExecutions(t *testing.T, st *store.Store, owner string) int64 {
	t.Helper()
	sum, err := st.Usage(context.Background(), store.Owner(owner), time.Now().Add(-24*time.Hour), time.Now().Add(time.Hour), 5)
	if err != nil {
		t.Fatalf("Usage(%s) = %v", owner, err)
	}
	return sum.Executions
}

func TestRecorderWritesEverythingOnClose(t *testing.T) {
	st, _ := testenv.Store(t)
	tests := []struct {
		name  string
		n     int
		batch int
	}{
		{"one", 1, 100},
		{"less than a batch", 99, 100},
		{"many batches", 1234, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			// FlushEvery far away: only full batches and Close write.
			rec, err := usage.NewExecutionRecorder(st, quiet, reg, usage.Options{BatchSize: tt.batch, FlushEvery: time.Hour, QueueSize: 2000})
			if err != nil {
				t.Fatal(err)
			}
			rec.Start()
			owner := "o-" + strings.ReplaceAll(tt.name, " ", "-")
			for range tt.n {
				if !rec.Add(execRecord(owner, "ok", time.Now())) {
					t.Fatalf("Add = false with room in the queue")
				}
			}
			if err := rec.Close(context.Background()); err != nil {
				t.Fatalf("Close = %v", err)
			}
			if got := countExecutions(t, st, owner); got != int64(tt.n) {
				t.Errorf("rows after Close = %d; want %d", got, tt.n)
			}
			if rec.Dropped() != 0 || rec.QueueDepth() != 0 {
				t.Errorf("Dropped = %d, QueueDepth = %d; want 0, 0", rec.Dropped(), rec.QueueDepth())
			}
			if got := metricValue(t, reg, "wasmwiz_usage_written_total"); got != float64(tt.n) {
				t.Errorf("wasmwiz_usage_written_total = %v; want %d", got, tt.n)
			}
			if rec.Add(execRecord(owner, "ok", time.Now())) || rec.Dropped() != 1 {
				t.Errorf("Add after Close = true or not counted; want false and dropped 1")
			}
		})
	}
}

func TestRecorderFlushAndTimer(t *testing.T) {
	st, _ := testenv.Store(t)
	rec, err := usage.NewExecutionRecorder(st, quiet, nil, usage.Options{FlushEvery: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rec.Start()
	defer rec.Close(context.Background())

	rec.Add(execRecord("timer", "ok", time.Now()))
	testenv.Eventually(t, 10*time.Second, "the timer to write a partial batch", func() bool {
		return countExecutions(t, st, "timer") == 1
	})
	for range 7 {
		rec.Add(execRecord("flush", "trap", time.Now()))
	}
	if err := rec.Flush(context.Background()); err != nil {
		t.Fatalf("Flush = %v", err)
	}
	if got := countExecutions(t, st, "flush"); got != 7 {
		t.Errorf("rows after Flush = %d; want 7", got)
	}
}

// gate is a writer that blocks until released, counting what it wrote.
type gate struct {
	entered chan struct{}
	release chan struct{}
	mu      sync.Mutex
	written int
}

func newGate() *gate { return &gate{entered: make(chan struct{}, 1), release: make(chan struct{})} }

func (g *gate) write(ctx context.Context, batch []store.Execution) error {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-g.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	g.mu.Lock()
	g.written += len(batch)
	g.mu.Unlock()
	return nil
}

func TestRecorderFullQueueDropsWithoutBlocking(t *testing.T) {
	g := newGate()
	reg := prometheus.NewRegistry()
	const queue = 10
	rec, err := usage.NewRecorder("usage", g.write, quiet, reg, usage.Options{QueueSize: queue, BatchSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	rec.Start()
	rec.Add(execRecord("x", "ok", time.Now()))
	<-g.entered // the writer holds one record and waits

	// Every Add returns at once: the test would hang otherwise.
	accepted, refused := 0, 0
	for range 3 * queue {
		if rec.Add(execRecord("x", "ok", time.Now())) {
			accepted++
		} else {
			refused++
		}
	}
	if accepted != queue || refused != 2*queue {
		t.Errorf("Add with a stuck writer: %d accepted, %d refused; want %d, %d", accepted, refused, queue, 2*queue)
	}
	if rec.Dropped() != uint64(2*queue) {
		t.Errorf("Dropped = %d; want %d", rec.Dropped(), 2*queue)
	}
	if got := rec.QueueDepth(); got != queue+1 {
		t.Errorf("QueueDepth = %d; want %d (queue full, one in the writer)", got, queue+1)
	}
	if got := metricValue(t, reg, "wasmwiz_usage_dropped_total"); got != float64(2*queue) {
		t.Errorf("wasmwiz_usage_dropped_total = %v; want %d", got, 2*queue)
	}
	if got := metricValue(t, reg, "wasmwiz_usage_queue_depth"); got != float64(queue+1) {
		t.Errorf("wasmwiz_usage_queue_depth = %v; want %d", got, queue+1)
	}
	close(g.release)
	if err := rec.Close(context.Background()); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if g.written != queue+1 {
		t.Errorf("written = %d; want %d: every accepted record", g.written, queue+1)
	}
}

// flaky fails its first failures writes with err, then writes to the store.
type flaky struct {
	st       *store.Store
	failures int32
	err      error
	calls    atomic.Int32
}

func (f *flaky) write(ctx context.Context, batch []store.Execution) error {
	if f.calls.Add(1) <= f.failures {
		return f.err
	}
	return f.st.InsertExecutions(ctx, batch)
}

func TestRecorderRetriesFailedWrites(t *testing.T) {
	st, _ := testenv.Store(t)
	tests := []struct {
		name     string
		failures int32
		err      error
	}{
		{"database unreachable", 20, fmt.Errorf("insert: %w", store.ErrUnavailable)},
		{"write timed out", 3, context.DeadlineExceeded},
		{"other error, fewer than MaxAttempts", 7, errors.New("something odd")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &flaky{st: st, failures: tt.failures, err: tt.err}
			reg := prometheus.NewRegistry()
			rec, err := usage.NewRecorder("usage", f.write, quiet, reg, fast)
			if err != nil {
				t.Fatal(err)
			}
			rec.Start()
			owner := "retry-" + strings.ReplaceAll(tt.name, " ", "-")
			for range 50 {
				rec.Add(execRecord(owner, "ok", time.Now()))
			}
			if err := rec.Close(context.Background()); err != nil {
				t.Fatalf("Close = %v", err)
			}
			if got := countExecutions(t, st, owner); got != 50 {
				t.Errorf("rows = %d; want 50 after %d failed writes", got, tt.failures)
			}
			if rec.Dropped() != 0 {
				t.Errorf("Dropped = %d; want 0", rec.Dropped())
			}
			if got := metricValue(t, reg, "wasmwiz_usage_write_errors_total"); got != float64(tt.failures) {
				t.Errorf("wasmwiz_usage_write_errors_total = %v; want %d", got, tt.failures)
			}
		})
	}
}

func TestRecorderRetryIsIdempotent(t *testing.T) {
	// A write whose commit went through but whose answer was lost is
	// written again: the rows must not double.
	st, _ := testenv.Store(t)
	var calls atomic.Int32
	write := func(ctx context.Context, batch []store.Execution) error {
		err := st.InsertExecutions(ctx, batch)
		if calls.Add(1) == 1 && err == nil {
			return fmt.Errorf("connection lost after commit: %w", store.ErrUnavailable)
		}
		return err
	}
	rec, err := usage.NewRecorder("usage", write, quiet, nil, fast)
	if err != nil {
		t.Fatal(err)
	}
	rec.Start()
	for range 10 {
		rec.Add(execRecord("twice", "ok", time.Now()))
	}
	if err := rec.Close(context.Background()); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if got := countExecutions(t, st, "twice"); got != 10 {
		t.Errorf("rows after a retried write that had succeeded = %d; want 10", got)
	}
}

func TestRecorderIsolatesABadRecord(t *testing.T) {
	st, _ := testenv.Store(t)
	// The store refuses any batch holding the bad record, as a CHECK would.
	bad := execRecord("isolate", "ok", time.Now())
	write := func(ctx context.Context, batch []store.Execution) error {
		for _, r := range batch {
			if r.ID == bad.ID {
				return errors.New("violates check constraint")
			}
		}
		return st.InsertExecutions(ctx, batch)
	}
	o := fast
	o.MaxAttempts = 2
	rec, err := usage.NewRecorder("usage", write, quiet, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	rec.Start()
	for i := range 20 {
		if i == 7 {
			rec.Add(bad)
			continue
		}
		rec.Add(execRecord("isolate", "ok", time.Now()))
	}
	if err := rec.Close(context.Background()); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if got := countExecutions(t, st, "isolate"); got != 19 {
		t.Errorf("rows = %d; want the 19 good records", got)
	}
	if rec.Dropped() != 1 {
		t.Errorf("Dropped = %d; want the 1 bad record", rec.Dropped())
	}
}

func TestRecorderCloseGivesUpWhenDatabaseStaysDown(t *testing.T) {
	down := func(context.Context, []store.Execution) error { return store.ErrUnavailable }
	rec, err := usage.NewRecorder("usage", down, quiet, nil, fast)
	if err != nil {
		t.Fatal(err)
	}
	rec.Start()
	for range 30 {
		rec.Add(execRecord("down", "ok", time.Now()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = rec.Close(ctx)
	if err == nil || !strings.Contains(err.Error(), "30 records not written") {
		t.Errorf("Close with the database down = %v; want an error naming 30 records", err)
	}
	if rec.Dropped() != 30 {
		t.Errorf("Dropped = %d; want 30", rec.Dropped())
	}
}

func TestRecorderMetricsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	noop := func(context.Context, []store.Execution) error { return nil }
	if _, err := usage.NewRecorder("usage", noop, quiet, reg, usage.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := usage.NewRecorder("usage", noop, quiet, reg, usage.Options{}); err == nil {
		t.Errorf("second recorder with the same name on one registry = nil error; want a registration error")
	}
	for _, name := range []string{"wasmwiz_usage_queue_depth", "wasmwiz_usage_dropped_total",
		"wasmwiz_usage_written_total", "wasmwiz_usage_write_errors_total"} {
		metricValue(t, reg, name)
	}
}

// metricValue gathers one counter or gauge; a metric that is not
// registered fails the test.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
