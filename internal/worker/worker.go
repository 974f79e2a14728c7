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

// forwardAfter is the expected wait for a slot below which a worker keeps a
// request rather than forward it: a hop costs two NATS messages and a few
// hundred microseconds, and when executions are short a saturated fleet has
// no idle worker to find, so forwarding would only double the traffic.
const forwardAfter = 5 * time.Millisecond

// ioTimeout bounds each object-store transfer (a spilled stdin or output).
const ioTimeout = 15 * time.Second

// Worker serves execution requests. Run it once.
//
// Capacity: NATS spreads a queue group's messages over its members without
// regard to how busy they are, and whatever a member has received no other
// member can take. So a message that arrives when all Concurrency slots are
// taken, on a worker whose expected wait for a slot is over forwardAfter, is
// forwarded (same body, same reply subject, a hop count) to the queue group,
// where an idle worker may pick it up; the requester never notices. A
// message already forwarded maxForwards times, or one that would wait only
// briefly, joins the worker's queue and runs, in arrival order, when a slot
// frees. When the fleet is saturated, requests therefore queue on the
// workers until the api's wait ends. Nothing is dropped: the subscription
// has no pending limit (a slow-consumer drop would be a silent 504), and
// every message taken off it is queued or running. Stdin objects are
// fetched only once a slot is held, so a waiting request holds at most its
// message.
//
// Liveness: every request the worker holds, queued or running, gets a
// heartbeat on its reply subject once it is protocol.HeartbeatAfter old and
// every protocol.HeartbeatInterval after, so that its requester can tell a
// long execution from a dead worker (protocol.WorkerLostAfter).
type Worker struct {
	nc         *nats.Conn
	resp       *protocol.Responder
	exec       Executor
	blobs      BlobSource
	log        *slog.Logger
	cfg        Config
	isNotFound func(error) bool
	obs        Observer

	inflight sync.WaitGroup // every message taken off the subscription until it is answered or forwarded

	qmu     sync.Mutex
	running map[*nats.Msg]held // executing now: at most Concurrency
	queue   []held             // waiting for a slot, in arrival order
	// slots hands a message given a slot to one of Concurrency long-lived
	// slot goroutines. Its capacity is Concurrency: every message in it is
	// also in running, so a send never blocks.
	slots chan held
	// service is a moving average of how long an execution holds its slot
	// (nanoseconds; 0 until one has finished), for the forwarding decision.
	service atomic.Int64

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
		running:    make(map[*nats.Msg]held, cfg.Concurrency),
		slots:      make(chan held, cfg.Concurrency),
		runCtx:     runCtx,
		cancelRun:  cancel,
		ready:      make(chan struct{}),
		stopping:   make(chan struct{}),
		done:       make(chan struct{}),
	}, nil
}

// Ready is closed once the worker is subscribed and counted by presence.
func (w *Worker) Ready() <-chan struct{} { return w.ready }

// held is a message the worker has taken and not yet answered.
type held struct {
	msg      *nats.Msg
	received time.Time
	started  time.Time // zero while queued
}

// InFlight is the number of executions holding a slot now.
func (w *Worker) InFlight() int {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	return len(w.running)
}

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
	go w.heartbeats()
	for range w.cfg.Concurrency {
		go w.slot()
	}

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
	// dispatch has returned and every message is answered: no slot is
	// handed out any more.
	close(w.slots)
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
// messages that find no free slot are queued or forwarded as usual (see
// admit), forwarded now only to the rest of the fleet; with no other worker
// their requesters learn at once that none is available (ErrNoWorkers)
// rather than wait for this one.
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

// dispatch takes every message off the subscription as it arrives and
// admits it (see Worker). It returns nil when the drained subscription
// closes.
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
		w.admit(held{msg: msg, received: received})
	}
}

// admit runs h in a free slot, or forwards it, or queues it.
func (w *Worker) admit(h held) {
	w.inflight.Add(1)
	w.qmu.Lock()
	if len(w.running) < w.cfg.Concurrency {
		w.startLocked(h)
		w.qmu.Unlock()
		return
	}
	forward := protocol.Hops(h.msg) < maxForwards && w.expectedWaitLocked(h.received) > forwardAfter
	if !forward {
		w.queue = append(w.queue, h)
		w.qmu.Unlock()
		return
	}
	w.qmu.Unlock()
	err := w.resp.Forward(h.msg)
	if err == nil {
		w.inflight.Done()
		w.obs.Forwarded()
		if w.log.Enabled(context.Background(), slog.LevelDebug) {
			w.log.Debug("forwarded an execution message: all slots busy", "hops", protocol.Hops(h.msg)+1)
		}
		return
	}
	w.log.Warn("forward an execution message", "error", err)
	w.qmu.Lock()
	// A slot may have freed, and its runner found the queue empty, while
	// the lock was released.
	if len(w.running) < w.cfg.Concurrency {
		w.startLocked(h)
	} else {
		w.queue = append(w.queue, h)
	}
	w.qmu.Unlock()
}

// startLocked gives h a slot: a slot goroutine runs it, and whatever queues
// behind it. Called with qmu held and a slot free.
func (w *Worker) startLocked(h held) {
	h.started = time.Now()
	w.running[h.msg] = h
	w.slots <- h
}

// slot serves the messages handed to it until the worker is drained. The
// goroutines live as long as the worker, rather than one per message,
// because an execution's call depth (wazero's instantiation and the guest's
// host calls) grows a fresh goroutine's stack several times: that copying
// was 14% of the worker's CPU at c=32 (BENCHMARKS.md). A long-lived
// goroutine keeps its stack between executions.
func (w *Worker) slot() {
	for h := range w.slots {
		w.serve(h)
	}
}

// serve runs h, then the queued messages in turn while there are any, in
// the slot h was given.
func (w *Worker) serve(h held) {
	for {
		w.execute(h.msg, h.received)
		w.observeService(time.Since(h.started))
		w.qmu.Lock()
		delete(w.running, h.msg)
		next, ok := held{}, len(w.queue) > 0
		if ok {
			next = w.queue[0]
			w.queue[0] = held{}
			w.queue = w.queue[1:]
			next.started = time.Now()
			w.running[next.msg] = next
		}
		w.qmu.Unlock()
		// Done after the slot is given up, so that a drained worker (Run
		// waits on inflight) reports no execution holding a slot.
		w.inflight.Done()
		if !ok {
			return
		}
		h = next
	}
}

// observeService folds one slot hold time into the moving average (1/8
// weight). Concurrent updates may lose one another; it is an estimate.
func (w *Worker) observeService(d time.Duration) {
	old := w.service.Load()
	if old == 0 {
		w.service.Store(int64(d))
		return
	}
	w.service.Store(old + (int64(d)-old)/8)
}

// expectedWaitLocked estimates how long a request arriving now would wait
// for a slot: its place in the queue times the time a slot takes to free.
// That time is the moving average, or, when every running execution has
// already run longer than that, the youngest one's age (so long executions
// that have not finished yet count). Unknown (nothing finished yet) counts
// as long: better to look for an idle worker. Called with qmu held.
func (w *Worker) expectedWaitLocked(now time.Time) time.Duration {
	per := time.Duration(w.service.Load())
	if per == 0 {
		return time.Duration(math.MaxInt64)
	}
	youngest := time.Duration(math.MaxInt64)
	for _, h := range w.running {
		youngest = min(youngest, now.Sub(h.started))
	}
	if youngest != time.Duration(math.MaxInt64) && youngest > per {
		per = youngest
	}
	return per * time.Duration(len(w.queue)+1) / time.Duration(w.cfg.Concurrency)
}

// heartbeats tells the requester of every held message, once it is
// protocol.HeartbeatAfter old, that this worker still has it, until the
// worker is done.
func (w *Worker) heartbeats() {
	t := time.NewTicker(protocol.HeartbeatInterval)
	defer t.Stop()
	var due []*nats.Msg
	for {
		var now time.Time
		select {
		case <-w.done:
			return
		case now = <-t.C:
		}
		cutoff := now.Add(-protocol.HeartbeatAfter)
		due = due[:0]
		w.qmu.Lock()
		for _, h := range w.running {
			if h.received.Before(cutoff) {
				due = append(due, h.msg)
			}
		}
		for _, h := range w.queue {
			if h.received.Before(cutoff) {
				due = append(due, h.msg)
			}
		}
		w.qmu.Unlock()
		for _, m := range due {
			if err := w.resp.Heartbeat(m, w.cfg.ID); err != nil {
				w.log.Debug("heartbeat", "error", err)
			}
		}
		clear(due)
	}
}

// execute runs one request in the slot it was given, and replies.
func (w *Worker) execute(msg *nats.Msg, received time.Time) {
	dctx, cancel := context.WithTimeout(w.runCtx, ioTimeout)
	req, err := w.resp.Decode(dctx, msg)
	cancel()
	ids := func(attrs ...any) []any {
		return append([]any{"request_id", clip(req.RequestID), "execution_id", clip(req.ExecutionID)}, attrs...)
	}
	if err != nil {
		level := slog.LevelError
		if errors.Is(err, protocol.ErrMalformed) {
			level = slog.LevelWarn
		}
		w.log.Log(w.runCtx, level, "refused an execution request", ids("error", err)...)
		w.obs.Failed(string(protocol.FailureInternal))
		w.reply(msg, protocol.Reply{
			QueueTime: time.Since(received),
			Failure:   &protocol.Failure{Code: protocol.FailureInternal, Message: "the worker could not read the execution request"},
		}, ids)
		return
	}

	ex := w.execution(req, ids)
	debug := w.log.Enabled(w.runCtx, slog.LevelDebug)
	if debug {
		w.log.Debug("execution started", ids("module_sha256", req.ModuleSHA256, "timeout_ms", ex.Timeout.Milliseconds(),
			"memory_limit_bytes", ex.MemoryLimitBytes)...)
	}
	var notFound atomic.Bool
	sha := req.ModuleSHA256 // not req: the loader escapes, and req would go to the heap with it
	load := func(ctx context.Context) ([]byte, error) {
		b, err := w.blobs.BlobBytes(ctx, sha)
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
		w.log.Log(w.runCtx, level, "execution failed", ids("module_sha256", req.ModuleSHA256, "code", f.Code, "error", err)...)
		w.obs.Failed(string(f.Code))
		w.reply(msg, protocol.Reply{QueueTime: elapsed, Failure: f}, ids)
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
	w.reply(msg, rep, ids)
	// Each execution is on record in the api's usage table and in the
	// metrics; a line per execution here would be the worker's largest
	// cost after the module itself, so it is for debugging only.
	if debug {
		w.log.Debug("execution finished", ids("module_sha256", req.ModuleSHA256, "status", rep.Status,
			"exit_code", rep.ExitCode, "duration_ms", ms(rep.Duration), "queue_ms", ms(rep.QueueTime),
			"memory_peak_bytes", rep.MemoryPeak, "cache_hit", rep.CacheHit,
			"stdin_bytes", len(req.Stdin), "stdout_bytes", len(rep.Stdout), "stderr_bytes", len(rep.Stderr),
			"truncated", rep.Truncated)...)
	}
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

func (w *Worker) reply(msg *nats.Msg, rep protocol.Reply, ids func(...any) []any) {
	rep.Worker = w.cfg.ID
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.runCtx), ioTimeout)
	defer cancel()
	if err := w.resp.Respond(ctx, msg, rep); err != nil {
		w.log.Error("reply to an execution request", ids("error", err)...)
	}
}

// execution lowers the request's limits to the worker's ceilings.
func (w *Worker) execution(req protocol.Request, ids func(...any) []any) runner.Execution {
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
		w.log.Warn("request limit above the worker's ceiling; lowered", ids("limit", what, "asked", asked, "ceiling", ceiling)...)
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
