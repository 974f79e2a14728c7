// Package usage keeps the record of what the platform did: a usage record
// per execution and an audit event per security-relevant act, both written
// in batches off the request path, and a retention job that prunes them
// (and ad-hoc modules past their TTL). It sits between httpapi and store:
// httpapi hands it records, store writes them.
package usage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmwiz/wasmwiz/internal/store"
)

// Options tune a Recorder. Zero fields take the defaults.
type Options struct {
	// QueueSize bounds the records held in memory waiting to be written
	// (default 10,000); past it, records are dropped and counted.
	QueueSize int
	// BatchSize is the most records one write carries (default 500).
	BatchSize int
	// FlushEvery is the longest a record waits for a batch to fill
	// (default 500ms).
	FlushEvery time.Duration
	// WriteTimeout bounds one write (default 10s).
	WriteTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between the tries of a
	// failed write (default 100ms and 10s).
	MinBackoff, MaxBackoff time.Duration
	// MaxAttempts is how often a write failing for another reason than an
	// unreachable database is tried (default 8) before its records are
	// tried one by one and those that still fail are dropped. A write
	// failing because the database is unreachable is tried until Close
	// gives up, and such failures do not count towards MaxAttempts.
	MaxAttempts int
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.QueueSize, 10_000)
	def(&o.BatchSize, 500)
	def(&o.MaxAttempts, 8)
	defDur(&o.FlushEvery, 500*time.Millisecond)
	defDur(&o.WriteTimeout, 10*time.Second)
	defDur(&o.MinBackoff, 100*time.Millisecond)
	defDur(&o.MaxBackoff, 10*time.Second)
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	return o
}

// WriteFunc writes one batch. It must be idempotent: a batch whose outcome
// was unknown is written again.
type WriteFunc[T any] func(ctx context.Context, batch []T) error

// Recorder queues records in memory and writes them in batches from one
// goroutine, so that the request path never waits on the database. Add
// never blocks: when the queue is full the record is dropped and counted.
// A failed write is retried with backoff while its batch is held; records
// arriving meanwhile wait in the queue, up to its bound.
type Recorder[T any] struct {
	name  string
	write WriteFunc[T]
	log   *slog.Logger
	o     Options
	// onDrop, when set, sees every record dropped after it was queued
	// (the audit log names each lost event).
	onDrop func(items []T, reason string)

	queue chan T
	mu    sync.RWMutex // Add holds it shared; Close exclusively
	// closed is set under mu by Close: no record enters the queue after
	// it, so the final drain sees everything.
	closed bool

	flushReq chan chan error
	stop     chan struct{}
	done     chan struct{}
	// runCtx ends when Close gives up, aborting writes and retries.
	runCtx    context.Context
	cancelRun context.CancelFunc
	startOnce sync.Once
	closeOnce sync.Once
	closeErr  error

	held          atomic.Int64 // records taken off the queue, not yet written
	dropped       atomic.Uint64
	lostAtClose   atomic.Uint64
	written       atomic.Uint64
	writeFailures atomic.Uint64
}

// NewRecorder returns a stopped recorder; Start starts it. name prefixes
// its metrics, registered on reg when reg is not nil:
// wasmwiz_<name>_queue_depth, wasmwiz_<name>_dropped_total,
// wasmwiz_<name>_written_total and wasmwiz_<name>_write_errors_total.
func NewRecorder[T any](name string, write WriteFunc[T], log *slog.Logger, reg prometheus.Registerer, o Options) (*Recorder[T], error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o = o.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Recorder[T]{
		name: name, write: write, log: log, o: o,
		queue:    make(chan T, o.QueueSize),
		flushReq: make(chan chan error),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		runCtx:   ctx, cancelRun: cancel,
	}
	if reg != nil {
		var registered []prometheus.Collector
		for _, c := range []prometheus.Collector{
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: "wasmwiz", Subsystem: name, Name: "queue_depth",
				Help: "Records held in memory by the " + name + " recorder, waiting to be written to PostgreSQL.",
			}, func() float64 { return float64(r.QueueDepth()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Namespace: "wasmwiz", Subsystem: name, Name: "dropped_total",
				Help: "Records the " + name + " recorder lost: its queue was full, a write kept failing, or shutdown gave up.",
			}, func() float64 { return float64(r.Dropped()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Namespace: "wasmwiz", Subsystem: name, Name: "written_total",
				Help: "Records the " + name + " recorder wrote to PostgreSQL.",
			}, func() float64 { return float64(r.written.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Namespace: "wasmwiz", Subsystem: name, Name: "write_errors_total",
				Help: "Failed batch writes of the " + name + " recorder (each is retried).",
			}, func() float64 { return float64(r.writeFailures.Load()) }),
		} {
			if err := reg.Register(c); err != nil {
				for _, done := range registered {
					reg.Unregister(done)
				}
				cancel()
				return nil, fmt.Errorf("register %s recorder metrics: %w", name, err)
			}
			registered = append(registered, c)
		}
	}
	return r, nil
}

// Start starts the writing goroutine. It is idempotent.
func (r *Recorder[T]) Start() {
	r.startOnce.Do(func() { go r.run() })
}

// Add queues a record without blocking. It reports false, and counts the
// record as dropped, when the queue is full or the recorder is closed.
func (r *Recorder[T]) Add(v T) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if !r.closed {
		select {
		case r.queue <- v:
			return true
		default:
		}
	}
	r.dropped.Add(1)
	return false
}

// Dropped is how many records were lost since the start.
func (r *Recorder[T]) Dropped() uint64 { return r.dropped.Load() }

// QueueDepth is how many records wait to be written.
func (r *Recorder[T]) QueueDepth() int { return len(r.queue) + int(r.held.Load()) }

// Flush writes everything queued before it was called, and waits for that
// until ctx ends. It returns the write's error, if it gave up.
func (r *Recorder[T]) Flush(ctx context.Context) error {
	r.Start()
	reply := make(chan error, 1)
	select {
	case r.flushReq <- reply:
	case <-r.done:
		return fmt.Errorf("flush %s records: recorder closed", r.name)
	case <-ctx.Done():
		return fmt.Errorf("flush %s records: %w", r.name, ctx.Err())
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return fmt.Errorf("flush %s records: %w", r.name, ctx.Err())
	}
}

// Close stops taking records and writes everything queued, retrying while
// ctx lasts; when ctx ends first, what is left is dropped and Close says
// how much. Call it after the last Add (after the HTTP server has shut
// down). It is idempotent.
func (r *Recorder[T]) Close(ctx context.Context) error {
	r.Start()
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		close(r.stop)
		select {
		case <-r.done:
		case <-ctx.Done():
			r.cancelRun()
			<-r.done
		}
		r.cancelRun()
		if n := r.lostAtClose.Load(); n > 0 {
			r.closeErr = fmt.Errorf("close %s recorder: %d records not written: %w", r.name, n, ctx.Err())
		}
	})
	return r.closeErr
}

func (r *Recorder[T]) run() {
	defer close(r.done)
	batch := make([]T, 0, r.o.BatchSize)
	tick := time.NewTicker(r.o.FlushEvery)
	defer tick.Stop()
	for {
		select {
		case v := <-r.queue:
			batch = append(batch, v)
			r.held.Add(1)
			if len(batch) >= r.o.BatchSize {
				batch, _ = r.writeBatch(batch)
			}
		case <-tick.C:
			batch, _ = r.writeBatch(batch)
		case reply := <-r.flushReq:
			var err error
			batch, err = r.drain(batch)
			reply <- err
		case <-r.stop:
			r.drain(batch)
			return
		}
	}
}

// drain writes the batch and what the queue holds now (under steady load,
// not what arrives meanwhile), and returns the first loss's error.
func (r *Recorder[T]) drain(batch []T) ([]T, error) {
	var firstErr error
	left := len(r.queue)
	for {
		for ; left > 0 && len(batch) < r.o.BatchSize; left-- {
			batch = append(batch, <-r.queue)
			r.held.Add(1)
		}
		if len(batch) == 0 {
			return batch, firstErr
		}
		var err error
		if batch, err = r.writeBatch(batch); err != nil && firstErr == nil {
			firstErr = err
		}
	}
}

// writeBatch writes a batch, retrying as Options say, and returns it
// emptied for reuse, with an error when records were lost.
func (r *Recorder[T]) writeBatch(batch []T) ([]T, error) {
	if len(batch) == 0 {
		return batch, nil
	}
	defer func() { r.held.Add(-int64(len(batch))) }()
	backoff := r.o.MinBackoff
	// Only failures the records may be to blame for count towards
	// MaxAttempts: after a long outage, one odd error (a server still
	// starting up, say) must not cost the batch its remaining tries.
	odd := 0
	for attempts := 1; ; attempts++ {
		err := r.writeOnce(batch)
		if err == nil {
			if attempts > 1 {
				r.log.Info(r.name+" records written after failures", "records", len(batch), "attempts", attempts)
			}
			r.written.Add(uint64(len(batch)))
			return batch[:0], nil
		}
		r.writeFailures.Add(1)
		if attempts == 1 {
			r.log.Warn(r.name+" records not written; retrying", "records", len(batch), "error", err)
		}
		// Only failures other than an outage spend the retry budget.
		if !transient(err) {
			odd++
			if r.runCtx.Err() == nil && odd >= r.o.MaxAttempts {
				return batch[:0], r.writeEach(batch, err)
			}
		}
		select {
		case <-time.After(backoff):
			backoff = min(backoff*2, r.o.MaxBackoff)
		case <-r.runCtx.Done():
			r.lose(batch, "shutdown", err)
			return batch[:0], fmt.Errorf("write %d %s records: %w", len(batch), r.name, err)
		}
	}
}

// writeEach writes a batch that keeps failing record by record, so that one
// bad record does not take the others with it.
func (r *Recorder[T]) writeEach(batch []T, cause error) error {
	var bad []T
	for i := range batch {
		if err := r.writeOnce(batch[i : i+1]); err != nil {
			bad = append(bad, batch[i])
			cause = err
			continue
		}
		r.written.Add(1)
	}
	if len(bad) == 0 {
		return nil
	}
	r.lose(bad, "write failed", cause)
	return fmt.Errorf("write %d %s records: %w", len(bad), r.name, cause)
}

func (r *Recorder[T]) writeOnce(batch []T) error {
	ctx, cancel := context.WithTimeout(r.runCtx, r.o.WriteTimeout)
	defer cancel()
	return r.write(ctx, batch)
}

func (r *Recorder[T]) lose(items []T, reason string, cause error) {
	r.dropped.Add(uint64(len(items)))
	if reason == "shutdown" {
		r.lostAtClose.Add(uint64(len(items)))
	}
	r.log.Error(r.name+" records dropped", "records", len(items), "reason", reason, "error", cause)
	if r.onDrop != nil {
		r.onDrop(items, reason)
	}
}

// transient reports whether a write failed because the database could not
// be reached (or answered too late): such a write is retried until Close
// gives up, since nothing is wrong with the records.
func transient(err error) bool {
	return errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}
