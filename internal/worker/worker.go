// Package worker takes execution requests off NATS, runs each through the
// runner within a concurrency bound, and replies. It stands between protocol
// (the wire) and runner (wazero); module bytes come through a BlobSource, so
// it knows nothing of PostgreSQL, and nothing of HTTP.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/runner"
)

// Executor runs one execution; *runner.Runner is the real one.
type Executor interface {
	Run(ctx context.Context, ex runner.Execution, load runner.Loader) (runner.Result, error)
}

// BlobSource returns a module's bytes by SHA-256; the runner asks for them
// only on a compile-cache miss.
type BlobSource interface {
	BlobBytes(ctx context.Context, sha256Hex string) ([]byte, error)
}

// Config is what a Worker needs besides its dependencies.
type Config struct {
	Prefix      string // NATS_SUBJECT_PREFIX
	ID          string // answers presence pings; in every reply
	Concurrency int    // executions at once in this process
	// Ceilings behind the api's own limits (EXECUTION_TIMEOUT, MEMORY_LIMIT,
	// MAX_OUTPUT_SIZE, MAX_INPUT_SIZE), so that a message from anyone who
	// can publish on NATS cannot ask for more. Zero means no ceiling.
	MaxTimeout     time.Duration
	MaxMemoryBytes uint64
	MaxOutputBytes int64
	MaxStdinBytes  int64
	// IsNotFound tells a BlobSource error meaning "no such module" (the
	// reply's module_not_found) from a failure of the source itself. The
	// caller wires it (errors.Is(err, store.ErrNotFound)) so that this
	// package need not import the store.
	IsNotFound func(error) bool
	// Observer, when set, is told what the worker does, for metrics.
	Observer Observer
}

// Observer is told of each request's outcome; *telemetry.WorkerMetrics is
// the real one. It is called before the reply is sent, so that a client
// holding an answer finds it counted, and from many goroutines at once.
type Observer interface {
	// Executed: the module ran; status is a runner.Status.
	Executed(status string, duration, queue time.Duration, memoryPeakBytes uint64)
	// Failed: the worker could not run it; code is a protocol.FailureCode.
	Failed(code string)
	// Forwarded: passed on to the queue group, every slot being taken.
	Forwarded()
}

type noObserver struct{}

func (noObserver) Executed(string, time.Duration, time.Duration, uint64) {}
func (noObserver) Failed(string)                                         {}
func (noObserver) Forwarded()                                            {}

// maxForwards bounds how often a request is passed on by busy workers
// before one waits for a slot instead: enough to find an idle worker when
// some are, few enough that a saturated fleet adds only a couple of hops.
const maxForwards = 2

// ioTimeout bounds each object-store transfer (a spilled stdin or output).
const ioTimeout = 15 * time.Second

// Worker serves execution requests. Run it once.
//
// Capacity: NATS spreads a queue group's messages over its members without
// regard to how busy they are, and whatever a member has received no other
// member can take. So a message that arrives when all Concurrency slots are
// taken is forwarded (same body, same reply subject, a hop count) to the
// queue group, where an idle worker may pick it up; the requester never
// notices. A message already forwarded maxForwards times is kept: the
// dispatcher waits for a slot for it, and the messages behind it wait in
// the subscription's buffer until then (each is forwarded in turn if the
// slots are still full). When the fleet is saturated, requests therefore
// queue on the workers, in arrival order per worker, until the api's wait
// ends. Nothing is dropped: the subscription has no pending limit (a
// slow-consumer drop would be a silent 504). Stdin objects are fetched only
// once a slot is held, so a waiting request holds at most its message.
type Worker struct {
	nc         *nats.Conn
	resp       *protocol.Responder
	exec       Executor
	blobs      BlobSource
	log        *slog.Logger
	cfg        Config
	isNotFound func(error) bool
	obs        Observer

	slots    chan struct{} // a token per running execution
	inflight sync.WaitGroup

	// runCtx is the executions' context. It ends only when Shutdown's
	// deadline passes: draining lets running executions finish.
	runCtx    context.Context
	cancelRun context.CancelFunc

	mu       sync.Mutex
	started  bool
	stopped  bool
	sub      *nats.Subscription
	presence *nats.Subscription
	ready    chan struct{} // closed once subscribed
	stopping chan struct{} // closed when draining starts
	done     chan struct{} // closed when drained and every execution replied
}

// New makes a Worker; it does no I/O until Run.
func New(nc *nats.Conn, exec Executor, blobs BlobSource, logger *slog.Logger, cfg Config) (*Worker, error) {
	switch {
	case nc == nil:
		return nil, errors.New("worker: nil NATS connection")
	case exec == nil:
		return nil, errors.New("worker: nil executor")
	case blobs == nil:
		return nil, errors.New("worker: nil blob source")
	case logger == nil:
		return nil, errors.New("worker: nil logger")
	case cfg.ID == "":
		return nil, errors.New("worker: empty worker id")
	case cfg.Concurrency < 1:
		return nil, fmt.Errorf("worker: concurrency %d; want at least 1", cfg.Concurrency)
	}
	resp, err := protocol.NewResponder(nc, cfg.Prefix, cfg.MaxStdinBytes)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	isNotFound := cfg.IsNotFound
	if isNotFound == nil {
		isNotFound = func(error) bool { return false }
	}
	obs := cfg.Observer
	if obs == nil {
		obs = noObserver{}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	return &Worker{
		nc:         nc,
		resp:       resp,
		exec:       exec,
		blobs:      blobs,
		log:        logger.With("worker", cfg.ID),
		cfg:        cfg,
		isNotFound: isNotFound,
		obs:        obs,
		slots:      make(chan struct{}, cfg.Concurrency),
		runCtx:     runCtx,
		cancelRun:  cancel,
		ready:      make(chan struct{}),
		stopping:   make(chan struct{}),
		done:       make(chan struct{}),
	}, nil
}

// Ready is closed once the worker is subscribed and counted by presence.
func (w *Worker) Ready() <-chan struct{} { return w.ready }

// InFlight is the number of executions holding a slot now.
func (w *Worker) InFlight() int { return len(w.slots) }

// Run subscribes and serves until ctx ends or Shutdown is called, then
// drains: it stops taking work, runs what it already received, and returns
// once every execution has replied. It returns an error if it cannot
// subscribe or the connection closes under it.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		return errors.New("worker: Run called twice")
	}
	w.started = true
	var sub *nats.Subscription
	var err error
	if !w.stopped {
		sub, err = w.subscribe()
	}
	w.mu.Unlock()
	if sub == nil { // stopped before it started, or could not subscribe
		w.cancelRun()
		close(w.done)
		return err
	}
	go w.announce()

	loopErr := make(chan error, 1)
	go func() { loopErr <- w.dispatch(sub) }()
	select {
	case <-ctx.Done():
		w.stop()
		err = <-loopErr
	case <-w.stopping:
		err = <-loopErr
	case err = <-loopErr:
		// The subscription ended without a drain: the connection closed.
		w.stop()
	}
	w.inflight.Wait()
	w.cancelRun()
	close(w.done)
	w.log.Info("worker drained")
	return err
}

// subscribe is called with mu held.
func (w *Worker) subscribe() (*nats.Subscription, error) {
	sub, err := w.nc.QueueSubscribeSync(protocol.ExecSubject(w.cfg.Prefix), protocol.QueueGroup(w.cfg.Prefix))
	if err != nil {
		return nil, fmt.Errorf("worker: subscribe: %w", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("worker: pending limits: %w", err)
	}
	presence, err := w.resp.AnswerPresence(w.cfg.ID)
	if err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("worker: %w", err)
	}
	w.sub, w.presence = sub, presence
	return sub, nil
}

// announce closes ready once the server has the subscriptions. A connection
// still trying to reach NATS (RetryOnFailedConnect) holds them until it
// does, so the worker waits rather than fail.
func (w *Worker) announce() {
	const wait = 2 * time.Second
	for logged := false; ; logged = true {
		err := w.nc.FlushTimeout(wait)
		if err == nil {
			break
		}
		if w.nc.IsClosed() {
			return // dispatch reports it
		}
		select {
		case <-w.stopping:
			return
		default:
		}
		if !logged {
			w.log.Warn("waiting for NATS to take the subscriptions", "error", err)
		}
		if !w.nc.IsConnected() {
			time.Sleep(wait) // FlushTimeout may fail at once while reconnecting
		}
	}
	close(w.ready)
	w.log.Info("worker ready", "subject", protocol.ExecSubject(w.cfg.Prefix),
		"queue_group", protocol.QueueGroup(w.cfg.Prefix), "concurrency", w.cfg.Concurrency)
}

// Accepting reports whether the worker takes work now: subscribed, not
// draining, and connected. It is the worker's readiness.
func (w *Worker) Accepting() bool {
	select {
	case <-w.ready:
	default:
		return false
	}
	select {
	case <-w.stopping:
		return false
	default:
	}
	return w.nc.IsConnected()
}

// Shutdown stops taking work and waits until every execution received has
// replied. If ctx ends first, running executions are cancelled (they reply
// with an internal failure) and Shutdown returns ctx's error; Run returns
// once they have replied.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.stop()
	w.mu.Lock()
	started := w.started
	w.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		w.cancelRun()
		return fmt.Errorf("worker shutdown: %w", ctx.Err())
	}
}

// stop begins the drain once: presence stops answering (the api no longer
// counts this worker), and the execution subscription drains — the server
// stops sending, and what is already buffered is still dispatched. Buffered
// messages that find no free slot are forwarded as usual, now only to the
// rest of the fleet; with no other worker their requesters learn at once
// that none is available (ErrNoWorkers) rather than wait for this one.
func (w *Worker) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.stopped = true
	close(w.stopping)
	if w.presence != nil {
		_ = w.presence.Unsubscribe()
	}
	if w.sub != nil {
		if err := w.sub.Drain(); err != nil {
			w.log.Warn("drain execution subscription", "error", err)
		}
	}
}

// dispatch hands each message to a slot, forwarding it when none is free
// (see Worker). It returns nil when the drained subscription closes.
func (w *Worker) dispatch(sub *nats.Subscription) error {
	for {
		msg, err := sub.NextMsgWithContext(context.Background())
		if err != nil {
			if errors.Is(err, nats.ErrSlowConsumer) {
				w.log.Error("execution messages dropped by the NATS client", "error", err)
				continue
			}
			select {
			case <-w.stopping:
				return nil
			default:
				return fmt.Errorf("worker: receive: %w", err)
			}
		}
		received := time.Now()
		if msg.Reply == "" {
			w.log.Warn("dropped an execution message without a reply subject", "bytes", len(msg.Data))
			continue
		}
		select {
		case w.slots <- struct{}{}:
		default:
			if protocol.Hops(msg) < maxForwards {
				err := w.resp.Forward(msg)
				if err == nil {
					w.obs.Forwarded()
					w.log.Debug("forwarded an execution message: all slots busy", "hops", protocol.Hops(msg)+1)
					continue
				}
				w.log.Warn("forward an execution message", "error", err)
			}
			w.slots <- struct{}{}
		}
		w.inflight.Add(1)
		go w.execute(msg, received)
	}
}

// execute runs one request in the slot dispatch took for it, and replies.
func (w *Worker) execute(msg *nats.Msg, received time.Time) {
	defer w.inflight.Done()
	defer func() { <-w.slots }()

	dctx, cancel := context.WithTimeout(w.runCtx, ioTimeout)
	req, err := w.resp.Decode(dctx, msg)
	cancel()
	log := w.log.With("request_id", clip(req.RequestID), "execution_id", clip(req.ExecutionID))
	if err != nil {
		level := slog.LevelError
		if errors.Is(err, protocol.ErrMalformed) {
			level = slog.LevelWarn
		}
		log.Log(w.runCtx, level, "refused an execution request", "error", err)
		w.obs.Failed(string(protocol.FailureInternal))
		w.reply(log, msg, protocol.Reply{
			QueueTime: time.Since(received),
			Failure:   &protocol.Failure{Code: protocol.FailureInternal, Message: "the worker could not read the execution request"},
		})
		return
	}

	ex := w.execution(req, log)
	log.Debug("execution started", "module_sha256", req.ModuleSHA256, "timeout_ms", ex.Timeout.Milliseconds(),
		"memory_limit_bytes", ex.MemoryLimitBytes)
	var notFound atomic.Bool
	load := func(ctx context.Context) ([]byte, error) {
		b, err := w.blobs.BlobBytes(ctx, req.ModuleSHA256)
		if err != nil && w.isNotFound(err) {
			notFound.Store(true)
		}
		return b, err
	}
	res, err := w.run(ex, load)
	elapsed := time.Since(received)
	if err != nil {
		f := w.failure(err, notFound.Load())
		level := slog.LevelWarn
		if f.Code == protocol.FailureInternal {
			level = slog.LevelError
		}
		log.Log(w.runCtx, level, "execution failed", "module_sha256", req.ModuleSHA256, "code", f.Code, "error", err)
		w.obs.Failed(string(f.Code))
		w.reply(log, msg, protocol.Reply{QueueTime: elapsed, Failure: f})
		return
	}
	defer res.Release()
	rep := protocol.Reply{
		Status:     string(res.Status),
		ExitCode:   res.ExitCode,
		Stdout:     res.Stdout,
		Stderr:     res.Stderr,
		Truncated:  res.Truncated,
		Error:      res.Error,
		Duration:   res.Duration,
		MemoryPeak: res.MemoryPeakBytes,
		// Everything before the module started: slot, stdin, load, compile.
		QueueTime: max(elapsed-res.Duration, 0),
		CacheHit:  res.CacheHit,
	}
	w.obs.Executed(rep.Status, rep.Duration, rep.QueueTime, rep.MemoryPeak)
	w.reply(log, msg, rep)
	log.Info("execution finished", "module_sha256", req.ModuleSHA256, "status", rep.Status,
		"exit_code", rep.ExitCode, "duration_ms", ms(rep.Duration), "queue_ms", ms(rep.QueueTime),
		"memory_peak_bytes", rep.MemoryPeak, "cache_hit", rep.CacheHit,
		"stdin_bytes", len(req.Stdin), "stdout_bytes", len(rep.Stdout), "stderr_bytes", len(rep.Stderr),
		"truncated", rep.Truncated)
}

// run calls the executor, turning a panic into an error: a module that
// finds a bug in the runtime should fail its own execution, not every
// execution this process holds.
func (w *Worker) run(ex runner.Execution, load runner.Loader) (res runner.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("executor panic: %v\n%s", p, debug.Stack())
		}
	}()
	return w.exec.Run(w.runCtx, ex, load)
}

func (w *Worker) reply(log *slog.Logger, msg *nats.Msg, rep protocol.Reply) {
	rep.Worker = w.cfg.ID
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.runCtx), ioTimeout)
	defer cancel()
	if err := w.resp.Respond(ctx, msg, rep); err != nil {
		log.Error("reply to an execution request", "error", err)
	}
}

// execution lowers the request's limits to the worker's ceilings.
func (w *Worker) execution(req protocol.Request, log *slog.Logger) runner.Execution {
	ex := runner.Execution{
		SHA256:           req.ModuleSHA256,
		Name:             req.ModuleName,
		Stdin:            req.Stdin,
		Args:             req.Args,
		Env:              req.Env,
		Timeout:          req.Timeout,
		MemoryLimitBytes: req.MemoryLimitBytes,
		MaxOutputBytes:   int(min(req.MaxOutputBytes, math.MaxInt)),
	}
	lower := func(what string, asked, ceiling any) {
		log.Warn("request limit above the worker's ceiling; lowered", "limit", what, "asked", asked, "ceiling", ceiling)
	}
	if c := w.cfg.MaxTimeout; c > 0 && ex.Timeout > c {
		lower("timeout", ex.Timeout.String(), c.String())
		ex.Timeout = c
	}
	if c := w.cfg.MaxMemoryBytes; c > 0 && ex.MemoryLimitBytes > c {
		lower("memory_bytes", ex.MemoryLimitBytes, c)
		ex.MemoryLimitBytes = c
	}
	if c := w.cfg.MaxOutputBytes; c > 0 && int64(ex.MaxOutputBytes) > c {
		lower("output_bytes", ex.MaxOutputBytes, c)
		ex.MaxOutputBytes = int(c)
	}
	return ex
}

// failure turns a runner error into what the api is told. Internal details
// stay in the worker's log: the message reaches API clients.
func (w *Worker) failure(err error, notFound bool) *protocol.Failure {
	var invalid *runner.InvalidModuleError
	switch {
	case notFound || w.isNotFound(err):
		return &protocol.Failure{Code: protocol.FailureModuleNotFound, Message: "the module's bytes are not stored"}
	case errors.As(err, &invalid):
		return &protocol.Failure{Code: protocol.FailureInvalidModule, Message: invalid.Reason}
	case errors.Is(err, runner.ErrNoStart):
		return &protocol.Failure{Code: protocol.FailureInvalidModule, Message: runner.ErrNoStart.Error()}
	case errors.Is(err, context.Canceled), errors.Is(err, runner.ErrClosed):
		return &protocol.Failure{Code: protocol.FailureInternal, Message: "the worker shut down before the execution finished"}
	}
	return &protocol.Failure{Code: protocol.FailureInternal, Message: "the worker could not run the execution"}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// clip keeps ids from a refused (possibly hostile) message short in logs.
func clip(s string) string {
	const n = 128
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
