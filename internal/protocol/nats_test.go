package protocol

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

// connect dials the machine's NATS (TEST_NATS_URL overrides the default).
func connect(t testing.TB) *nats.Conn {
	t.Helper()
	testenv.RequireNATS(t)
	nc, err := nats.Connect(testenv.NATSURL, nats.Name("protocol-test "+t.Name()), nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatalf("connect to NATS at %s: %v (start NATS with JetStream: `nats-server -js`)", testenv.NATSURL, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// testPrefix is a subject prefix of the test's own, with a dot so that the
// bucket name's sanitising is exercised; its payload bucket is deleted when
// the test ends.
func testPrefix(t testing.TB, nc *nats.Conn) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "wwztest." + hex.EncodeToString(b)
	t.Cleanup(func() {
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteObjectStore(ctx, PayloadBucket(prefix))
	})
	return prefix
}

func newClient(t testing.TB, nc *nats.Conn, prefix string) *Client {
	t.Helper()
	c, err := NewClient(nc, prefix)
	if err != nil {
		t.Fatalf("NewClient(%q) error = %v", prefix, err)
	}
	return c
}

// serve answers every request of prefix with handle's reply, as a worker
// would, on a connection of its own.
func serve(t testing.TB, prefix string, handle func(Request) Reply) {
	t.Helper()
	nc := connect(t)
	r, err := NewResponder(nc, prefix, 0)
	if err != nil {
		t.Fatalf("NewResponder error = %v", err)
	}
	sub, err := nc.QueueSubscribe(ExecSubject(prefix), QueueGroup(prefix), func(m *nats.Msg) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := r.Decode(ctx, m)
		if err != nil {
			_ = r.Respond(ctx, m, Reply{Worker: "test", Failure: &Failure{Code: FailureInternal, Message: err.Error()}})
			return
		}
		if err := r.Respond(ctx, m, handle(req)); err != nil {
			t.Errorf("Respond error = %v", err)
		}
	})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// assertBucketEmpty checks that every spilled body was deleted by its
// reader, or by the client's clean-up of a request nobody took (which runs
// in the background, so it is given a few seconds).
func assertBucketEmpty(t *testing.T, nc *nats.Conn, prefix string) {
	t.Helper()
	js, _ := jetstream.New(nc)
	ctx := ctxTimeout(t, 20*time.Second)
	obs, err := js.ObjectStore(ctx, PayloadBucket(prefix))
	if err != nil {
		t.Fatalf("ObjectStore(%s) error = %v; want the bucket the spill created", PayloadBucket(prefix), err)
	}
	var names []string
	testenv.Eventually(t, 10*time.Second, "the payload bucket empty", func() bool {
		// Each listing on a clock of its own: a List racing a delete's
		// purge can wait for its consumer until its context ends (seen
		// about once in 30 runs), and the next one answers.
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		infos, err := obs.List(lctx)
		names = names[:0]
		for _, i := range infos {
			names = append(names, i.Name)
		}
		return errors.Is(err, jetstream.ErrNoObjectsFound)
	})
	if len(names) > 0 {
		t.Fatalf("objects left in %s: %v; want none", PayloadBucket(prefix), names)
	}
}

func TestExecuteInline(t *testing.T) {
	nc := connect(t)
	prefix := testPrefix(t, nc)
	got := make(chan Request, 1)
	serve(t, prefix, func(r Request) Reply {
		got <- r
		return Reply{
			Status: "exit", ExitCode: 7, Stdout: append([]byte("out:"), r.Stdin...), Stderr: []byte("err\xff"),
			Truncated: true, Error: "exit code 7", Duration: 3 * time.Millisecond, MemoryPeak: 131072,
			QueueTime: time.Microsecond, CacheHit: true, Worker: "w-1",
		}
	})
	c := newClient(t, nc, prefix)

	tests := []struct {
		name   string
		modify func(*Request)
	}{
		{"full", func(*Request) {}},
		{"no stdin, args or env", func(r *Request) { r.Stdin, r.Args, r.Env = nil, nil, nil }},
		{"binary stdin", func(r *Request) { r.Stdin = []byte{0, 1, 2, 0xff, '\n', 0xfe} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validRequest()
			tt.modify(&req)
			rep, err := c.Execute(ctxTimeout(t, 10*time.Second), req)
			if err != nil {
				t.Fatalf("Execute error = %v", err)
			}
			if g := <-got; !reflect.DeepEqual(g, req) {
				t.Errorf("worker got %+v; want %+v", g, req)
			}
			want := Reply{
				Status: "exit", ExitCode: 7, Stdout: append([]byte("out:"), req.Stdin...), Stderr: []byte("err\xff"),
				Truncated: true, Error: "exit code 7", Duration: 3 * time.Millisecond, MemoryPeak: 131072,
				QueueTime: time.Microsecond, CacheHit: true, Worker: "w-1",
			}
			if !reflect.DeepEqual(rep, want) {
				t.Errorf("Execute = %+v; want %+v", rep, want)
			}
		})
	}
}

func TestExecuteFailureReply(t *testing.T) {
	nc := connect(t)
	prefix := testPrefix(t, nc)
	serve(t, prefix, func(r Request) Reply {
		return Reply{Worker: "w-1", Failure: &Failure{Code: FailureModuleNotFound, Message: "no blob " + r.ModuleSHA256}}
	})
	rep, err := newClient(t, nc, prefix).Execute(ctxTimeout(t, 10*time.Second), validRequest())
	if err != nil {
		t.Fatalf("Execute error = %v; want a reply with a failure", err)
	}
	if rep.Failure == nil || rep.Failure.Code != FailureModuleNotFound {
		t.Fatalf("Execute failure = %+v; want module_not_found", rep.Failure)
	}
}

// TestExecuteLarge sends bodies at their limits through a stock server: a
// 1 MiB stdin and 1 MiB on each of stdout and stderr exceed its 1 MiB max
// payload, so they travel through the object store and are deleted after.
func TestExecuteLarge(t *testing.T) {
	const mib = 1 << 20
	nc := connect(t)
	if nc.MaxPayload() > 2*mib {
		t.Logf("NATS max payload is %d; this test means to exceed it", nc.MaxPayload())
	}
	prefix := testPrefix(t, nc)
	var mu sync.Mutex
	outputs := map[int][2]int{} // stdin size → stdout, stderr sizes
	serve(t, prefix, func(r Request) Reply {
		mu.Lock()
		sizes := outputs[len(r.Stdin)]
		mu.Unlock()
		out := bytes.Repeat(r.Stdin, 1+sizes[0]/max(len(r.Stdin), 1))[:sizes[0]]
		errb := bytes.Repeat([]byte("e"), sizes[1])
		return Reply{Status: "ok", Stdout: out, Stderr: errb, Worker: "w"}
	})
	c := newClient(t, nc, prefix)

	tests := []struct {
		name                  string
		stdin, stdout, stderr int
	}{
		{"1 MiB stdin, small outputs", mib, 10, 10},
		{"small stdin, 1 MiB stdout and stderr", 1000, mib, mib},
		{"1 MiB stdin, stdout and stderr", mib + 1, mib, mib},
		{"stdout alone over the limit", 1001, mib, 0},
		{"just under the limit inline", 1002, int(nc.MaxPayload()) - 2000, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			outputs[tt.stdin] = [2]int{tt.stdout, tt.stderr}
			mu.Unlock()
			req := validRequest()
			req.Stdin = randomBytes(tt.stdin)
			req.MaxOutputBytes = mib
			rep, err := c.Execute(ctxTimeout(t, 30*time.Second), req)
			if err != nil {
				t.Fatalf("Execute error = %v", err)
			}
			if rep.Failure != nil {
				t.Fatalf("Execute failure = %+v", rep.Failure)
			}
			wantOut := bytes.Repeat(req.Stdin, 1+tt.stdout/len(req.Stdin))[:tt.stdout]
			if !bytes.Equal(rep.Stdout, wantOut) {
				t.Errorf("Execute stdout = %d bytes; want %d bytes echoing stdin", len(rep.Stdout), tt.stdout)
			}
			if len(rep.Stderr) != tt.stderr || bytes.Count(rep.Stderr, []byte("e")) != tt.stderr {
				t.Errorf("Execute stderr = %d bytes; want %d", len(rep.Stderr), tt.stderr)
			}
		})
	}
	assertBucketEmpty(t, nc, prefix)
}

func TestExecuteNoWorkers(t *testing.T) {
	nc := connect(t)
	prefix := testPrefix(t, nc)
	c := newClient(t, nc, prefix)
	for _, size := range []int{10, 1 << 20} {
		t.Run(fmt.Sprintf("stdin %d", size), func(t *testing.T) {
			req := validRequest()
			req.Stdin = randomBytes(size)
			// A deadline far away: only an immediate "no responders" can
			// make this ErrNoWorkers rather than ErrTimeout.
			_, err := c.Execute(ctxTimeout(t, time.Minute), req)
			if !errors.Is(err, ErrNoWorkers) {
				t.Fatalf("Execute with no workers error = %v; want ErrNoWorkers", err)
			}
		})
	}
	assertBucketEmpty(t, nc, prefix)
}

func TestExecuteTimeout(t *testing.T) {
	nc := connect(t)
	prefix := testPrefix(t, nc)
	sub, err := nc.QueueSubscribe(ExecSubject(prefix), QueueGroup(prefix), func(*nats.Msg) {})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_, err = newClient(t, nc, prefix).Execute(ctxTimeout(t, 200*time.Millisecond), validRequest())
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Execute with a silent worker error = %v; want ErrTimeout", err)
	}
}

// A worker that takes a request and then says nothing (killed, cut off from
// NATS) costs its requester WorkerLostAfter, not the request's whole wait.
func TestExecuteWorkerLost(t *testing.T) {
	nc := connect(t)
	prefix := testPrefix(t, nc)
	taken := make(chan struct{}, 1)
	sub, err := nc.QueueSubscribe(ExecSubject(prefix), QueueGroup(prefix), func(*nats.Msg) { taken <- struct{}{} })
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	start := time.Now()
	_, err = newClient(t, nc, prefix).Execute(ctxTimeout(t, time.Minute), validRequest())
	waited := time.Since(start)
	if !errors.Is(err, ErrWorkerLost) {
		t.Fatalf("Execute with a silent worker error = %v; want ErrWorkerLost", err)
	}
	<-taken
	// Not a performance figure: the bound says the minute-long deadline was
	// not what ended the wait, and the lower one that silence was given its
	// full allowance.
	if waited < WorkerLostAfter || waited > 20*time.Second {
		t.Errorf("gave up after %v; want between WorkerLostAfter (%v) and far less than the deadline", waited, WorkerLostAfter)
	}
}

// Heartbeats keep a request alive for as long as its worker holds it, well
// past WorkerLostAfter; a heartbeat to a request nobody waits for is
// harmless.
func TestExecuteHeartbeats(t *testing.T) {
	nc := connect(t)
	prefix := testPrefix(t, nc)
	wnc := connect(t)
	r, err := NewResponder(wnc, prefix, 0)
	if err != nil {
		t.Fatalf("NewResponder error = %v", err)
	}
	hold := 2*WorkerLostAfter + 500*time.Millisecond
	sub, err := wnc.QueueSubscribe(ExecSubject(prefix), QueueGroup(prefix), func(m *nats.Msg) {
		go func() {
			deadline := time.Now().Add(hold)
			for time.Now().Before(deadline) {
				time.Sleep(HeartbeatInterval)
				if err := r.Heartbeat(m, "w-hb"); err != nil {
					t.Errorf("Heartbeat error = %v", err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := r.Respond(ctx, m, Reply{Status: "ok", Worker: "w-hb", Stdout: []byte("late")}); err != nil {
				t.Errorf("Respond error = %v", err)
			}
			// After the reply, nobody waits: this must go nowhere.
			if err := r.Heartbeat(m, "w-hb"); err != nil {
				t.Errorf("Heartbeat after the reply error = %v", err)
			}
		}()
	})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := wnc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	rep, err := newClient(t, nc, prefix).Execute(ctxTimeout(t, time.Minute), validRequest())
	if err != nil {
		t.Fatalf("Execute held for %v with heartbeats error = %v; want the reply", hold, err)
	}
	if string(rep.Stdout) != "late" || rep.Worker != "w-hb" {
		t.Errorf("reply = %+v; want the held request's", rep)
	}
	if err := r.Heartbeat(&nats.Msg{}, "w-hb"); !errors.Is(err, ErrNoReplySubject) {
		t.Errorf("Heartbeat without a reply subject error = %v; want ErrNoReplySubject", err)
	}
}

func TestExecuteGarbledReply(t *testing.T) {
	nc := connect(t)
	prefix := testPrefix(t, nc)
	sub, err := nc.QueueSubscribe(ExecSubject(prefix), QueueGroup(prefix), func(m *nats.Msg) {
		_ = m.Respond([]byte("this is not the protocol"))
	})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_, err = newClient(t, nc, prefix).Execute(ctxTimeout(t, 10*time.Second), validRequest())
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("Execute with a garbled reply error = %v; want ErrMalformed", err)
	}
}

func TestExecuteRejects(t *testing.T) {
	nc := connect(t)
	c := newClient(t, nc, testPrefix(t, nc))
	invalid := validRequest()
	invalid.ModuleSHA256 = "nope"
	huge := validRequest()
	huge.Args = []string{strings.Repeat("a", int(nc.MaxPayload()))}
	tests := []struct {
		name string
		req  Request
		want error
	}{
		{"invalid", invalid, nil},
		{"metadata over max payload", huge, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Execute(ctxTimeout(t, 10*time.Second), tt.req)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Execute error = %v; want %v", err, tt.want)
			}
		})
	}
}

// TestForward: a worker with no room forwards the request; the next one
// answers the original requester.
func TestForward(t *testing.T) {
	nc := connect(t)
	prefix := testPrefix(t, nc)
	r, err := NewResponder(nc, prefix, 0)
	if err != nil {
		t.Fatalf("NewResponder error = %v", err)
	}
	sub, err := nc.QueueSubscribe(ExecSubject(prefix), QueueGroup(prefix), func(m *nats.Msg) {
		if Hops(m) < 2 {
			if err := r.Forward(m); err != nil {
				t.Errorf("Forward error = %v", err)
			}
			return
		}
		_ = r.Respond(context.Background(), m, Reply{Status: "ok", Stdout: []byte(strconv.Itoa(Hops(m))), Worker: "w"})
	})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	rep, err := newClient(t, nc, prefix).Execute(ctxTimeout(t, 10*time.Second), validRequest())
	if err != nil || string(rep.Stdout) != "2" {
		t.Fatalf("Execute through two forwards = stdout %q, error %v; want hops 2", rep.Stdout, err)
	}
}

func TestHops(t *testing.T) {
	tests := []struct {
		header string
		want   int
	}{{"", 0}, {"1", 1}, {"3", 3}, {"-1", 1 << 16}, {"x", 1 << 16}, {"99999999999999999999", 1 << 16}}
	for _, tt := range tests {
		m := &nats.Msg{Header: nats.Header{}}
		if tt.header != "" {
			m.Header.Set(HopsHeader, tt.header)
		}
		if got := Hops(m); got != tt.want {
			t.Errorf("Hops(%q) = %d; want %d", tt.header, got, tt.want)
		}
	}
}

func TestCountWorkers(t *testing.T) {
	for _, n := range []int{0, 1, 2} {
		t.Run(fmt.Sprintf("%d workers", n), func(t *testing.T) {
			nc := connect(t)
			prefix := testPrefix(t, nc)
			for i := range n {
				wc := connect(t)
				r, err := NewResponder(wc, prefix, 0)
				if err != nil {
					t.Fatalf("NewResponder error = %v", err)
				}
				if _, err := r.AnswerPresence(fmt.Sprintf("worker-%d", i)); err != nil {
					t.Fatalf("AnswerPresence error = %v", err)
				}
				if err := wc.Flush(); err != nil {
					t.Fatalf("flush: %v", err)
				}
			}
			got, err := newClient(t, nc, prefix).CountWorkers(ctxTimeout(t, 10*time.Second), 300*time.Millisecond)
			if err != nil || got != n {
				t.Fatalf("CountWorkers = %d, %v; want %d", got, err, n)
			}
		})
	}
}

func TestNewClientRejectsBadPrefix(t *testing.T) {
	nc := connect(t)
	if _, err := NewClient(nc, "a.*"); err == nil {
		t.Fatalf(`NewClient(nc, "a.*") error = nil; want an error`)
	}
	if _, err := NewResponder(nc, "", 0); err == nil {
		t.Fatalf(`NewResponder(nc, "") error = nil; want an error`)
	}
}

// Silence while the requester's own connection is down is not blamed on
// the worker: the reply may have been sent while nobody listened.
func TestExecuteConnectionLost(t *testing.T) {
	srv := testenv.StartNATS(t)
	dial := func() *nats.Conn {
		nc, err := nats.Connect(srv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			t.Fatalf("connect to the test's nats-server: %v", err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	nc, wnc := dial(), dial()
	prefix := "wwztest.connlost"
	taken := make(chan struct{}, 1)
	if _, err := wnc.QueueSubscribe(ExecSubject(prefix), QueueGroup(prefix), func(*nats.Msg) { taken <- struct{}{} }); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := wnc.Flush(); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := newClient(t, nc, prefix).Execute(ctxTimeout(t, time.Minute), validRequest())
		errc <- err
	}()
	<-taken
	srv.Stop()
	defer srv.Start()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrConnectionLost) {
			t.Errorf("Execute across a NATS outage error = %v; want ErrConnectionLost", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Execute still waiting 30 s into a NATS outage")
	}
}

// The watchdog's rounds, on a clock of the test's own: silence fails a
// call; a round that comes late (the process stalled) starts the silence
// again instead; a disruption of the connection changes the verdict.
func TestWatchdogSweep(t *testing.T) {
	c := newClient(t, connect(t), "wwztest.sweep")
	t0 := time.Now()
	newCall := func() *call {
		cl := &call{res: make(chan callResult, 1), sent: mono(t0)}
		cl.last.Store(cl.sent)
		c.mu.Lock()
		c.calls[fmt.Sprint(len(c.calls))] = cl
		c.mu.Unlock()
		return cl
	}
	verdict := func(cl *call) error {
		select {
		case r := <-cl.res:
			return r.err
		default:
			return nil
		}
	}
	w := &watchdog{prev: t0}
	a := newCall()
	// Rounds on time, silence short of WorkerLostAfter: nothing.
	var now time.Time
	for now = t0.Add(HeartbeatInterval); now.Sub(t0) <= WorkerLostAfter; now = now.Add(HeartbeatInterval) {
		c.sweep(w, now, false)
		if err := verdict(a); err != nil {
			t.Fatalf("after %v of silence: %v; want no verdict yet", now.Sub(t0), err)
		}
	}
	c.sweep(w, now, false)
	if err := verdict(a); !errors.Is(err, ErrWorkerLost) {
		t.Fatalf("after %v of silence, on time: %v; want ErrWorkerLost", now.Sub(t0), err)
	}

	// A stall: the next round comes 3 s late. Not a verdict, and the
	// silence counts from the stall's end.
	b := newCall()
	now = now.Add(3 * time.Second)
	c.sweep(w, now, false)
	if err := verdict(b); err != nil {
		t.Fatalf("after a stall: %v; want no verdict (the heartbeats may be unread)", err)
	}
	resumed := now
	for now = now.Add(HeartbeatInterval); now.Sub(resumed) <= WorkerLostAfter; now = now.Add(HeartbeatInterval) {
		c.sweep(w, now, false)
		if err := verdict(b); err != nil {
			t.Fatalf("%v after the stall: %v; want no verdict yet", now.Sub(resumed), err)
		}
	}
	c.sweep(w, now, false)
	if err := verdict(b); !errors.Is(err, ErrWorkerLost) {
		t.Fatalf("silence after the stall: %v; want ErrWorkerLost", err)
	}

	// Silence across a disruption of the connection is the connection's.
	d := newCall()
	c.sweep(w, now.Add(HeartbeatInterval), true)
	c.sweep(w, now.Add(2*HeartbeatInterval), false)
	if err := verdict(d); !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("silence across a disruption: %v; want ErrConnectionLost", err)
	}
}
