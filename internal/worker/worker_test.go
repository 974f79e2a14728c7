package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/runner"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
	"github.com/wasmwiz/wasmwiz/testdata"
)

func TestExecute(t *testing.T) {
	h := newHarness(t)
	mods, shas := blobsOf([]byte("module bytes"))
	var (
		mu  sync.Mutex
		got runner.Execution
	)
	exec := execFunc(func(ctx context.Context, ex runner.Execution, load runner.Loader) (runner.Result, error) {
		mu.Lock()
		got = ex
		mu.Unlock()
		switch string(ex.Stdin) {
		case "load":
			if _, err := load(ctx); err != nil {
				return runner.Result{}, fmt.Errorf("load module %s: %w", ex.SHA256, err)
			}
		case "invalid":
			return runner.Result{}, &runner.InvalidModuleError{Reason: `imports "env.f", which the platform does not provide`}
		case "no start":
			return runner.Result{}, fmt.Errorf("compile: %w", runner.ErrNoStart)
		case "broken":
			return runner.Result{}, errors.New("pgx: connection refused to postgres://user:secret@db")
		case "panic":
			panic("runtime bug with secret details")
		}
		return runner.Result{
			Status: runner.StatusExit, ExitCode: 2, Stdout: append([]byte("out:"), ex.Stdin...),
			Stderr: []byte("err"), Truncated: true, Error: "exit code 2",
			Duration: time.Millisecond, MemoryPeakBytes: 65536, CacheHit: true,
		}, nil
	})
	h.start(t, exec, workerOpts{id: "w-exec", blobs: mods, cfg: func(c *Config) {
		c.MaxTimeout, c.MaxMemoryBytes, c.MaxOutputBytes = time.Second, 8<<20, 1000
	}})

	tests := []struct {
		name        string
		sha, stdin  string
		wantStatus  string
		wantFailure protocol.FailureCode
		wantMessage string // substring of the failure's message
	}{
		{"runs", anySHA, "hello", "exit", "", ""},
		{"loads stored bytes", shas[0], "load", "exit", "", ""},
		{"module not found", anySHA, "load", "", protocol.FailureModuleNotFound, "not stored"},
		{"invalid module", anySHA, "invalid", "", protocol.FailureInvalidModule, "env.f"},
		{"no _start", anySHA, "no start", "", protocol.FailureInvalidModule, "_start"},
		{"internal error stays in the worker", anySHA, "broken", "", protocol.FailureInternal, "could not run"},
		{"executor panic fails only its execution", anySHA, "panic", "", protocol.FailureInternal, "could not run"},
		{"still serving after the panic", anySHA, "after", "exit", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(tt.sha)
			req.Stdin = []byte(tt.stdin)
			req.Timeout, req.MemoryLimitBytes, req.MaxOutputBytes = 5*time.Second, 64<<20, 500
			rep, err := h.client.Execute(ctxTimeout(t, 10*time.Second), req)
			if err != nil {
				t.Fatalf("Execute error = %v", err)
			}
			if rep.Worker != "w-exec" {
				t.Errorf("Execute worker = %q; want w-exec", rep.Worker)
			}
			if tt.wantFailure != "" {
				if rep.Failure == nil || rep.Failure.Code != tt.wantFailure || !strings.Contains(rep.Failure.Message, tt.wantMessage) {
					t.Fatalf("Execute failure = %+v; want %s mentioning %q", rep.Failure, tt.wantFailure, tt.wantMessage)
				}
				if strings.Contains(rep.Failure.Message, "secret") {
					t.Fatalf("Execute failure message %q leaks the worker's error", rep.Failure.Message)
				}
				return
			}
			if rep.Failure != nil {
				t.Fatalf("Execute failure = %+v; want status %s", rep.Failure, tt.wantStatus)
			}
			want := protocol.Reply{
				Status: "exit", ExitCode: 2, Stdout: []byte("out:" + tt.stdin), Stderr: []byte("err"),
				Truncated: true, Error: "exit code 2", Duration: time.Millisecond, MemoryPeak: 65536,
				QueueTime: rep.QueueTime, CacheHit: true, Worker: "w-exec",
			}
			if !reflect.DeepEqual(rep, want) {
				t.Errorf("Execute = %+v; want %+v", rep, want)
			}
			mu.Lock()
			ex := got
			mu.Unlock()
			// The request asked for more than the worker's ceilings allow.
			wantEx := runner.Execution{
				SHA256: tt.sha, Name: req.ModuleName, Stdin: req.Stdin, Args: req.Args, Env: req.Env,
				Timeout: time.Second, MemoryLimitBytes: 8 << 20, MaxOutputBytes: 500,
			}
			if !reflect.DeepEqual(ex, wantEx) {
				t.Errorf("executor got %+v; want %+v", ex, wantEx)
			}
		})
	}
}

// TestRealRunner runs the testdata modules through NATS, the worker and
// wazero, 1 MiB bodies included.
func TestRealRunner(t *testing.T) {
	h := newHarness(t)
	r, err := runner.New(context.Background(), runner.Config{CacheBytes: 64 << 20})
	if err != nil {
		t.Fatalf("runner.New error = %v", err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	mods, shas := blobsOf(testdata.Module("hello"), testdata.Module("echo"), testdata.Module("no_start"), testdata.Module("exit3"))
	h.start(t, r, workerOpts{blobs: mods})

	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	tests := []struct {
		name       string
		sha        string
		stdin      []byte
		wantStatus string
		wantExit   uint32
		wantStdout []byte
		wantFail   protocol.FailureCode
	}{
		{"hello", shas[0], nil, "ok", 0, []byte("hello, world\n"), ""},
		{"hello again, from the cache", shas[0], nil, "ok", 0, []byte("hello, world\n"), ""},
		{"echo 1 MiB", shas[1], big, "ok", 0, big, ""},
		{"exit 3", shas[3], nil, "exit", 3, nil, ""},
		{"no _start", shas[2], nil, "", 0, nil, protocol.FailureInvalidModule},
		{"unknown module", anySHA, nil, "", 0, nil, protocol.FailureModuleNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(tt.sha)
			req.Stdin = tt.stdin
			rep, err := h.client.Execute(ctxTimeout(t, 30*time.Second), req)
			if err != nil {
				t.Fatalf("Execute(%s) error = %v", tt.name, err)
			}
			if tt.wantFail != "" {
				if rep.Failure == nil || rep.Failure.Code != tt.wantFail {
					t.Fatalf("Execute(%s) failure = %+v; want %s", tt.name, rep.Failure, tt.wantFail)
				}
				return
			}
			if rep.Failure != nil || rep.Status != tt.wantStatus || rep.ExitCode != tt.wantExit {
				t.Fatalf("Execute(%s) = status %s exit %d failure %+v (error %q); want %s exit %d",
					tt.name, rep.Status, rep.ExitCode, rep.Failure, rep.Error, tt.wantStatus, tt.wantExit)
			}
			if !bytes.Equal(rep.Stdout, tt.wantStdout) {
				t.Errorf("Execute(%s) stdout = %d bytes %.40q; want %d bytes %.40q", tt.name, len(rep.Stdout), rep.Stdout, len(tt.wantStdout), tt.wantStdout)
			}
		})
	}
}

// blocker is an executor whose runs wait until released (one per token, or
// all once releaseAll), counting how many run at once.
type blocker struct {
	release            chan struct{}
	all                chan struct{}
	allOnce            sync.Once
	running, max, runs atomic.Int64
}

func newBlocker() *blocker {
	return &blocker{release: make(chan struct{}, 100), all: make(chan struct{})}
}

func (b *blocker) releaseAll() { b.allOnce.Do(func() { close(b.all) }) }

func (b *blocker) Run(ctx context.Context, ex runner.Execution, _ runner.Loader) (runner.Result, error) {
	n := b.running.Add(1)
	for {
		m := b.max.Load()
		if n <= m || b.max.CompareAndSwap(m, n) {
			break
		}
	}
	b.runs.Add(1)
	defer b.running.Add(-1)
	select {
	case <-b.release:
	case <-b.all:
	case <-ctx.Done():
		return runner.Result{}, ctx.Err()
	}
	return runner.Result{Status: runner.StatusOK, Stdout: ex.Stdin}, nil
}

// executeAll sends n requests at once; the results arrive on the channel.
func executeAll(t *testing.T, c *protocol.Client, n int) <-chan error {
	results := make(chan error, n)
	for i := range n {
		go func() {
			req := request(anySHA)
			req.Stdin = fmt.Appendf(nil, "%d", i)
			rep, err := c.Execute(ctxTimeout(t, 60*time.Second), req)
			switch {
			case err != nil:
				results <- err
			case rep.Failure != nil || string(rep.Stdout) != string(req.Stdin):
				results <- fmt.Errorf("Execute(%d) = stdout %q failure %+v; want stdout %q", i, rep.Stdout, rep.Failure, req.Stdin)
			default:
				results <- nil
			}
		}()
	}
	return results
}

func TestConcurrencyBound(t *testing.T) {
	const concurrency, requests = 2, 8
	h := newHarness(t)
	b := newBlocker()
	w, _ := h.start(t, b, workerOpts{concurrency: concurrency})
	results := executeAll(t, h.client, requests)

	for done := 0; done < requests; done++ {
		testenv.Eventually(t, 10*time.Second, "a slot to be taken", func() bool {
			return b.runs.Load() > int64(done)
		})
		if n := w.InFlight(); n > concurrency {
			t.Fatalf("InFlight() = %d; want at most %d", n, concurrency)
		}
		b.release <- struct{}{}
	}
	for range requests {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
	if got := b.max.Load(); got != concurrency {
		t.Errorf("executions at once = %d; want %d with %d requests waiting", got, concurrency, requests)
	}
}

// TestBeyondCapacity: a request that finds every slot busy is forwarded to
// the queue group (here the same worker) at most maxForwards times, then
// held until a slot frees; none is lost.
func TestBeyondCapacity(t *testing.T) {
	h := newHarness(t)
	b := newBlocker()
	h.start(t, b, workerOpts{concurrency: 1})

	spy, err := h.nc.SubscribeSync(protocol.ExecSubject(h.prefix))
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := h.nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	results := executeAll(t, h.client, 2)
	var hops []int
	for len(hops) < 2+maxForwards {
		m, err := spy.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("spy saw hops %v, then %v; want 2 requests and %d forwards", hops, err, maxForwards)
		}
		hops = append(hops, protocol.Hops(m))
	}
	if want := []int{0, 0, 1, 2}; !reflect.DeepEqual(hops, want) {
		t.Errorf("messages on the subject had hops %v; want %v", hops, want)
	}
	b.release <- struct{}{}
	b.release <- struct{}{}
	for range 2 {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
	if m, err := spy.NextMsg(100 * time.Millisecond); err == nil {
		t.Errorf("a further message with hops %d; want none", protocol.Hops(m))
	}
}

func TestDrain(t *testing.T) {
	h := newHarness(t)
	b := newBlocker()
	w, runErr := h.start(t, b, workerOpts{concurrency: 2})
	results := executeAll(t, h.client, 2)
	testenv.Eventually(t, 10*time.Second, "two executions running", func() bool { return b.running.Load() == 2 })

	shutdown := make(chan error, 1)
	go func() { shutdown <- w.Shutdown(ctxTimeout(t, time.Minute)) }()

	// Draining: no longer counted, and no longer taking work.
	testenv.Eventually(t, 10*time.Second, "presence to stop answering", func() bool {
		n, err := h.client.CountWorkers(ctxTimeout(t, 5*time.Second), 100*time.Millisecond)
		return err == nil && n == 0
	})
	testenv.Eventually(t, 10*time.Second, "no worker to take a new request", func() bool {
		_, err := h.client.Execute(ctxTimeout(t, time.Second), request(anySHA))
		return errors.Is(err, protocol.ErrNoWorkers)
	})
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v with executions running; want it to wait", err)
	default:
	}

	// A probe that reached the worker before its unsubscription did is
	// held like any other message; releaseAll lets it finish too.
	b.releaseAll()
	for range 2 {
		if err := <-results; err != nil {
			t.Errorf("in-flight execution during drain: %v", err)
		}
	}
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown error = %v", err)
	}
	if err := <-runErr; err != nil {
		t.Errorf("Run error = %v", err)
	}
}

func TestShutdownDeadline(t *testing.T) {
	h := newHarness(t)
	b := newBlocker()
	w, runErr := h.start(t, b, workerOpts{concurrency: 1})
	results := executeAll(t, h.client, 1)
	testenv.Eventually(t, 10*time.Second, "the execution to run", func() bool { return b.running.Load() == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown(cancelled) error = %v; want context.Canceled", err)
	}
	// The cancelled execution still answers its requester.
	if err := <-results; err == nil || !strings.Contains(err.Error(), "shut down") {
		t.Errorf("cancelled execution = %v; want an internal failure saying the worker shut down", err)
	}
	if err := <-runErr; err != nil {
		t.Errorf("Run error = %v", err)
	}
}

func TestGarbage(t *testing.T) {
	h := newHarness(t)
	var logs testenv.SyncBuffer
	h.start(t, execFunc(func(_ context.Context, ex runner.Execution, _ runner.Loader) (runner.Result, error) {
		return runner.Result{Status: runner.StatusOK, Stdout: ex.Stdin}, nil
	}), workerOpts{logs: &logs})

	subject := protocol.ExecSubject(h.prefix)
	garbage := [][]byte{
		nil,
		[]byte("garbage"),
		[]byte("{}\n"),
		[]byte(`{"execution_id":"x","module_sha256":"zz","timeout_ns":1}` + "\n"),
		[]byte(`{"execution_id":"x","module_sha256":"` + anySHA + `","timeout_ns":1,"memory_limit_bytes":1,"max_output_bytes":1,"stdin_object":{"name":"nope","size":3}}` + "\n"),
		bytes.Repeat([]byte{0xff}, 10000),
	}
	for i, g := range garbage {
		t.Run(fmt.Sprintf("message %d", i), func(t *testing.T) {
			// Without a reply subject: dropped.
			if err := h.nc.Publish(subject, g); err != nil {
				t.Fatalf("publish: %v", err)
			}
			msg, err := h.nc.RequestWithContext(ctxTimeout(t, 20*time.Second), subject, g)
			if err != nil {
				t.Fatalf("request with garbage error = %v; want a failure reply", err)
			}
			if !bytes.Contains(msg.Data, []byte(`"code":"internal"`)) {
				t.Fatalf("reply to garbage = %q; want an internal failure", msg.Data)
			}
		})
	}
	// Still serving.
	rep, err := h.client.Execute(ctxTimeout(t, 10*time.Second), request(anySHA))
	if err != nil || rep.Status != "ok" {
		t.Fatalf("Execute after garbage = %+v, %v; want ok", rep, err)
	}
	if !strings.Contains(logs.String(), "without a reply subject") {
		t.Errorf("no log line for the messages without reply subject")
	}
}

// TestLogLinesCarryIDs: every line about an execution names its request and
// execution ids.
func TestLogLinesCarryIDs(t *testing.T) {
	h := newHarness(t)
	var logs testenv.SyncBuffer
	h.start(t, execFunc(func(ctx context.Context, ex runner.Execution, load runner.Loader) (runner.Result, error) {
		if _, err := load(ctx); err != nil {
			return runner.Result{}, err
		}
		return runner.Result{Status: runner.StatusOK}, nil
	}), workerOpts{logs: &logs, cfg: func(c *Config) { c.MaxTimeout = time.Second }})

	req := request(anySHA) // not stored: a failure, logged
	req.Timeout = time.Minute
	if _, err := h.client.Execute(ctxTimeout(t, 10*time.Second), req); err != nil {
		t.Fatalf("Execute error = %v", err)
	}
	// The reply is sent before the last line is written.
	testenv.Eventually(t, 5*time.Second, "the execution's log lines", func() bool {
		return strings.Contains(logs.String(), "execution failed")
	})
	lines := 0
	for line := range strings.Lines(logs.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		if msg := rec[slog.MessageKey].(string); msg == "worker ready" || msg == "worker drained" {
			continue
		}
		lines++
		if rec["request_id"] != req.RequestID || rec["execution_id"] != req.ExecutionID {
			t.Errorf("log line %s lacks request_id %s and execution_id %s", strings.TrimSpace(line), req.RequestID, req.ExecutionID)
		}
	}
	if lines < 2 {
		t.Errorf("%d execution log lines; want the lowered limit and the failure", lines)
	}
}

func TestPresence(t *testing.T) {
	h := newHarness(t)
	count := func() int {
		n, err := h.client.CountWorkers(ctxTimeout(t, 5*time.Second), 300*time.Millisecond)
		if err != nil {
			t.Fatalf("CountWorkers error = %v", err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("CountWorkers with no worker = %d; want 0", n)
	}
	b := newBlocker()
	h.start(t, b, workerOpts{id: "w-1"})
	if n := count(); n != 1 {
		t.Fatalf("CountWorkers with one worker = %d; want 1", n)
	}
	h.start(t, b, workerOpts{id: "w-2"})
	if n := count(); n != 2 {
		t.Fatalf("CountWorkers with two workers = %d; want 2", n)
	}
}

func TestNewRejects(t *testing.T) {
	nc := connect(t)
	exec := newBlocker()
	log := slog.New(slog.DiscardHandler)
	good := Config{Prefix: "p", ID: "w", Concurrency: 1}
	tests := []struct {
		name  string
		nc    *nats.Conn
		exec  Executor
		blobs BlobSource
		log   *slog.Logger
		cfg   func(*Config)
	}{
		{"nil conn", nil, exec, blobs{}, log, nil},
		{"nil executor", nc, nil, blobs{}, log, nil},
		{"nil blobs", nc, exec, nil, log, nil},
		{"nil logger", nc, exec, blobs{}, nil, nil},
		{"no id", nc, exec, blobs{}, log, func(c *Config) { c.ID = "" }},
		{"zero concurrency", nc, exec, blobs{}, log, func(c *Config) { c.Concurrency = 0 }},
		{"bad prefix", nc, exec, blobs{}, log, func(c *Config) { c.Prefix = "a.>" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			if _, err := New(tt.nc, tt.exec, tt.blobs, tt.log, cfg); err == nil {
				t.Fatalf("New(%s) error = nil; want an error", tt.name)
			}
		})
	}
}

// Requests a worker holds, running or queued for its one slot, stay alive
// well past protocol.WorkerLostAfter: the worker's heartbeats say it still
// has them.
func TestHeldRequestsHeartbeat(t *testing.T) {
	h := newHarness(t)
	b := newBlocker()
	h.start(t, b, workerOpts{concurrency: 1})
	results := executeAll(t, h.client, 2)
	testenv.Eventually(t, 10*time.Second, "the slot to be taken", func() bool { return b.runs.Load() == 1 })
	time.Sleep(2 * protocol.WorkerLostAfter)
	b.release <- struct{}{}
	b.release <- struct{}{}
	for range 2 {
		if err := <-results; err != nil {
			t.Errorf("a request held for %v: %v", 2*protocol.WorkerLostAfter, err)
		}
	}
}

// The forwarding decision: forward while nothing is known or the wait
// would be long, queue when executions are short, and count long-running
// executions by their age.
func TestExpectedWait(t *testing.T) {
	now := time.Now()
	w := &Worker{cfg: Config{Concurrency: 2}, running: map[*nats.Msg]held{}}
	run := func(age time.Duration) {
		w.running[&nats.Msg{}] = held{started: now.Add(-age)}
	}
	if got := w.expectedWaitLocked(now); got <= forwardAfter {
		t.Errorf("nothing measured yet: expected wait %v; want it to count as long", got)
	}
	w.service.Store(int64(200 * time.Microsecond))
	run(50 * time.Microsecond)
	run(100 * time.Microsecond)
	w.queue = make([]held, 10)
	// 11 in line, 2 slots, 200 µs each: 1.1 ms.
	if got, want := w.expectedWaitLocked(now), 1100*time.Microsecond; got != want {
		t.Errorf("short executions: expected wait %v; want %v", got, want)
	}
	// Both running executions are older than the average: they are long.
	clear(w.running)
	run(time.Second)
	run(3 * time.Second)
	w.queue = nil
	if got, want := w.expectedWaitLocked(now), 500*time.Millisecond; got != want {
		t.Errorf("long-running executions: expected wait %v; want %v", got, want)
	}

	w.observeService(0)
	if got := time.Duration(w.service.Load()); got != 175*time.Microsecond {
		t.Errorf("moving average after a 0 s execution = %v; want 175µs (1/8 weight)", got)
	}
}
