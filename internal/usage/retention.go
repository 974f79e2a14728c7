package usage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// RetentionStore is what the retention job needs of the store.
type RetentionStore interface {
	DeleteExecutionsBefore(ctx context.Context, before time.Time, limit int) (int64, error)
	DeleteExpiredModules(ctx context.Context, now time.Time, limit int) (int64, error)
	DeleteAuditEventsBefore(ctx context.Context, before time.Time, limit int) (int64, error)
}

// RetentionOptions tune the retention job. Zero fields take the defaults.
type RetentionOptions struct {
	// UsageRetention is how long usage records are kept (USAGE_RETENTION).
	UsageRetention time.Duration
	// AuditRetention is how long audit events are kept (default
	// AuditRetention).
	AuditRetention time.Duration
	// Interval is the time between runs (default 1h), jittered by ±10% so
	// that replicas started together drift apart.
	Interval time.Duration
	// FirstRun is the wait before the first run (default 1m, jittered):
	// not at once, so that a crash-looping replica does not delete in a
	// loop, and not an Interval later, so that a short-lived replica runs.
	FirstRun time.Duration
	// BatchSize is the most rows one statement deletes (default 5,000), so
	// that no delete holds locks or bloats WAL for long.
	BatchSize int
	// MaxBatches bounds the statements of one run per table (default 200);
	// what is left waits for the next run.
	MaxBatches int
}

// RetentionResult says what one run deleted.
type RetentionResult struct {
	Executions  int64
	Modules     int64
	AuditEvents int64
}

// Retention prunes usage records past USAGE_RETENTION, ad-hoc modules past
// their TTL (with their bytes, unless a kept module shares them) and audit
// events past AuditRetention. Every api replica may run it: the store's
// deletes skip rows another replica is deleting.
type Retention struct {
	st  RetentionStore
	log *slog.Logger
	o   RetentionOptions
	now func() time.Time
}

// NewRetention returns the retention job; Run runs it.
func NewRetention(st RetentionStore, log *slog.Logger, o RetentionOptions) *Retention {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.UsageRetention <= 0 {
		o.UsageRetention = 30 * 24 * time.Hour
	}
	if o.AuditRetention <= 0 {
		o.AuditRetention = AuditRetention
	}
	if o.Interval <= 0 {
		o.Interval = time.Hour
	}
	if o.FirstRun <= 0 {
		o.FirstRun = time.Minute
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 5000
	}
	if o.MaxBatches <= 0 {
		o.MaxBatches = 200
	}
	return &Retention{st: st, log: log, o: o, now: time.Now}
}

// Run runs the job until ctx ends, then returns nil. A failed run is
// logged and tried again at the next interval.
func (r *Retention) Run(ctx context.Context) error {
	wait := jitter(r.o.FirstRun)
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		res, err := r.RunOnce(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			r.log.WarnContext(ctx, "retention run failed", "error", err,
				"executions_deleted", res.Executions, "modules_deleted", res.Modules, "audit_events_deleted", res.AuditEvents)
		case res != RetentionResult{}:
			r.log.InfoContext(ctx, "retention run",
				"executions_deleted", res.Executions, "modules_deleted", res.Modules, "audit_events_deleted", res.AuditEvents)
		}
		wait = jitter(r.o.Interval)
	}
}

// jitter spreads d by ±10%.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// RunOnce runs the job once: each table in bounded batches until nothing
// is left to delete (or MaxBatches). It goes on to the next table when one
// fails, and returns what it deleted with the errors met.
func (r *Retention) RunOnce(ctx context.Context) (RetentionResult, error) {
	now := r.now()
	var res RetentionResult
	var errs []error
	for _, step := range []struct {
		what  string
		count *int64
		del   func(ctx context.Context, limit int) (int64, error)
	}{
		{"executions", &res.Executions, func(ctx context.Context, limit int) (int64, error) {
			return r.st.DeleteExecutionsBefore(ctx, now.Add(-r.o.UsageRetention), limit)
		}},
		{"expired modules", &res.Modules, func(ctx context.Context, limit int) (int64, error) {
			return r.st.DeleteExpiredModules(ctx, now, limit)
		}},
		{"audit events", &res.AuditEvents, func(ctx context.Context, limit int) (int64, error) {
			return r.st.DeleteAuditEventsBefore(ctx, now.Add(-r.o.AuditRetention), limit)
		}},
	} {
		for range r.o.MaxBatches {
			n, err := step.del(ctx, r.o.BatchSize)
			*step.count += n
			if err != nil {
				errs = append(errs, fmt.Errorf("prune %s: %w", step.what, err))
				break
			}
			if n < int64(r.o.BatchSize) {
				break
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	return res, errors.Join(errs...)
}
