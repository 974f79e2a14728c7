package usage_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
	"github.com/wasmwiz/wasmwiz/internal/usage"
)

// TestRecorderPostgresOutageDoesNotUseUpAttempts: a long outage (many failures of
// an unreachable database) followed by a couple of odd errors, fewer than
// MaxAttempts, loses nothing: only the odd ones count towards the bound.
func TestRecorderPostgresOutageDoesNotUseUpAttempts(t *testing.T) {
	st, _ := testenv.Store(t)
	var calls atomic.Int32
	write := func(ctx context.Context, batch []store.Execution) error {
		switch n := calls.Add(1); {
		case n <= 20:
			return fmt.Errorf("insert: %w", store.ErrUnavailable)
		case n <= 22:
			return errors.New("the database system is in recovery mode")
		}
		return st.InsertExecutions(ctx, batch)
	}
	o := fast
	o.MaxAttempts = 3
	rec, err := usage.NewRecorder("usage", write, quiet, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	rec.Start()
	for range 25 {
		rec.Add(execRecord("long-outage", "ok", time.Now()))
	}
	if err := rec.Close(context.Background()); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if got := countExecutions(t, st, "long-outage"); got != 25 || rec.Dropped() != 0 {
		t.Errorf("rows = %d, dropped %d; want 25 rows and none dropped after 20 outage failures and 2 odd ones (MaxAttempts 3)",
			got, rec.Dropped())
	}
}

// TestRecorderKeepsRecordsThroughPostgresRestart stops a private
// PostgreSQL under the real recorder and store: records added while it is
// down are held (queue depth, failed writes), and written once it is back,
// through the errors of a server restarting, with none dropped.
func TestRecorderKeepsRecordsThroughPostgresRestart(t *testing.T) {
	pg := testenv.StartPostgres(t)
	st, err := store.Open(context.Background(), pg.Database(t))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(st.Close)
	reg := prometheus.NewRegistry()
	// Quick retries, so that the restart's every phase is met; few odd
	// failures allowed, so that one counted wrongly would drop records.
	o := usage.Options{FlushEvery: 10 * time.Millisecond, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxAttempts: 2}
	rec, err := usage.NewExecutionRecorder(st, quiet, reg, o)
	if err != nil {
		t.Fatal(err)
	}
	rec.Start()
	t.Cleanup(func() { rec.Close(context.Background()) })

	rec.Add(execRecord("restart", "ok", time.Now()))
	flushCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rec.Flush(flushCtx); err != nil {
		t.Fatalf("Flush before the outage = %v", err)
	}

	pg.Stop()
	const during = 200
	for range during {
		rec.Add(execRecord("restart", "ok", time.Now()))
	}
	testenv.Eventually(t, 10*time.Second, "failed writes while PostgreSQL is down", func() bool {
		return metricValue(t, reg, "wasmwiz_usage_write_errors_total") >= 3
	})
	if d := rec.QueueDepth(); d != during {
		t.Errorf("queue depth while PostgreSQL is down = %d; want the %d records held", d, during)
	}
	pg.Start()
	if err := rec.Flush(flushCtx); err != nil {
		t.Fatalf("Flush once PostgreSQL is back = %v", err)
	}
	if got := countExecutions(t, st, "restart"); got != during+1 || rec.Dropped() != 0 {
		t.Errorf("rows = %d, dropped %d; want %d rows and none dropped", got, rec.Dropped(), during+1)
	}
	t.Logf("%v failed writes during the outage", metricValue(t, reg, "wasmwiz_usage_write_errors_total"))
}
