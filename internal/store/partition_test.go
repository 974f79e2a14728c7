package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

// slack is what a loaded 2-core machine may add to a bound under test.
const slack = 5 * time.Second

// TestWithinPartitionIsUnavailable: in a network partition a query does not
// fail, it hangs; Within turns its own bound into ErrUnavailable, both on a
// pooled connection whose packets are dropped and on one being made to a
// host that never answers. The caller's own cancellation or deadline keeps
// its meaning.
func TestWithinPartitionIsUnavailable(t *testing.T) {
	s, proxy := testenv.PartitionedStore(t)
	ctx := context.Background()
	getModule := func(ctx context.Context) (store.Module, error) {
		return s.GetModule(ctx, store.AllOwners(), uuid.Must(uuid.NewV7()))
	}
	if _, err := store.Within(ctx, time.Second, getModule); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Within(GetModule of no module) before the partition = %v; want ErrNotFound", err)
	}

	proxy.Partition()
	const bound = 300 * time.Millisecond
	// The first call hangs on the pooled connection, which pgx then drops;
	// the second waits for a new one that the partition never completes.
	for _, when := range []string{"on a pooled connection", "on a new connection"} {
		start := time.Now()
		_, err := store.Within(ctx, bound, getModule)
		if took := time.Since(start); took > bound+slack {
			t.Errorf("Within(%v) %s took %v", bound, when, took)
		}
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Within(%v) %s in a partition = %v; want ErrUnavailable", bound, when, err)
		}
	}

	t.Run("caller cancels", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		_, err := store.Within(ctx, time.Minute, getModule)
		if !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Within with the caller's context cancelled = %v; want context.Canceled, not ErrUnavailable", err)
		}
	})
	t.Run("caller's deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := store.Within(ctx, time.Minute, getModule)
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Within past the caller's deadline = %v; want DeadlineExceeded, not ErrUnavailable", err)
		}
	})
}

// TestWithinPassesAnswers: an answer, or a failure that is not a timeout,
// comes back as it is.
func TestWithinPassesAnswers(t *testing.T) {
	ctx := context.Background()
	if v, err := store.Within(ctx, time.Second, func(context.Context) (int, error) { return 7, nil }); v != 7 || err != nil {
		t.Errorf("Within(answer) = %v, %v; want 7, nil", v, err)
	}
	bad := errors.New("syntax error")
	if _, err := store.Within(ctx, time.Second, func(context.Context) (int, error) { return 0, bad }); err != bad {
		t.Errorf("Within(failure) = %v; want it unchanged", err)
	}
	// A not-found that comes back just as the bound passes is an answer.
	late := func(ctx context.Context) (int, error) {
		<-ctx.Done()
		return 0, store.ErrNotFound
	}
	if _, err := store.Within(ctx, time.Millisecond, late); err != store.ErrNotFound {
		t.Errorf("Within(not found at the bound) = %v; want ErrNotFound", err)
	}
}

// TestOpenConnectTimeout: a DATABASE_URL without connect_timeout gets
// DefaultConnectTimeout, so Open against a server that accepts and never
// answers fails instead of hanging; an explicit connect_timeout rules.
func TestOpenConnectTimeout(t *testing.T) {
	silent := testenv.SilentListener(t)
	tests := []struct {
		name  string
		query string
		bound time.Duration
	}{
		{"default", "sslmode=disable", store.DefaultConnectTimeout},
		// Below the default, so that meeting the bound shows it was used.
		{"explicit", "sslmode=disable&connect_timeout=1", time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dbURL := fmt.Sprintf("postgres://postgres@%s/postgres?%s", silent, tt.query)
			start := time.Now()
			s, err := store.Open(context.Background(), dbURL)
			took := time.Since(start)
			if err == nil {
				s.Close()
				t.Fatal("Open against a server that never answers succeeded")
			}
			limit := tt.bound + slack
			if tt.bound < store.DefaultConnectTimeout {
				limit = min(limit, store.DefaultConnectTimeout-time.Second/2)
			}
			if took > limit {
				t.Errorf("Open with %s took %v; want within %v (%v)", tt.query, took, limit, err)
			}
		})
	}
}

// TestOutage pins store.Outage: nothing is skipped before a failure; after
// one, callers skip for the window; then exactly one caller asks while the
// others go on skipping; an answer ends the outage, the caller's departure
// says nothing.
func TestOutage(t *testing.T) {
	var o store.Outage
	t0 := time.Unix(1_000_000, 0)
	const probe = 2 * time.Second
	if o.Skip(t0, probe) {
		t.Fatal("Skip before any failure = true")
	}
	o.Report(t0, fmt.Errorf("get: %w", store.ErrUnavailable))
	if !o.Skip(t0.Add(500*time.Millisecond), probe) {
		t.Error("Skip within the window after a failure = false")
	}

	at := t0.Add(1100 * time.Millisecond)
	var asked sync.WaitGroup
	var mu sync.Mutex
	askers := 0
	for range 8 {
		asked.Go(func() {
			if !o.Skip(at, probe) {
				mu.Lock()
				askers++
				mu.Unlock()
			}
		})
	}
	asked.Wait()
	if askers != 1 {
		t.Errorf("callers let through to ask after the window = %d; want 1", askers)
	}
	if !o.Skip(at.Add(probe-time.Millisecond), probe) {
		t.Error("Skip while one caller is asking = false")
	}
	o.Report(at.Add(probe), context.Canceled)
	if o.Skip(at.Add(probe+time.Millisecond), probe) {
		t.Error("Skip after the asking caller's time ran out = true; want another caller to ask")
	}
	o.Report(at.Add(probe), store.ErrNotFound)
	if o.Skip(at.Add(probe), probe) {
		t.Error("Skip after the store answered = true")
	}
}
