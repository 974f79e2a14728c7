package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wasmwiz/wasmwiz/internal/testenv"
	"github.com/wasmwiz/wasmwiz/testdata"
)

// The fault tests of issue 9: the platform's real processes against
// services that stop, and processes that are told to stop, under load.
// Services are private instances (testenv.StartNATS, StartPostgres): the
// machine's own are shared with every other test and are never stopped.

// executeGrace mirrors httpapi.ExecuteGrace: how long the api waits for a
// worker past an execution's time limit.
const executeGrace = 5 * time.Second

// outcome is what one request of a load saw.
type outcome struct {
	id                string // the X-Request-ID it sent
	start, wrote, end time.Time
	status            int
	code              string // the error code of a non-200
	message           string // and its message
	execStatus        string // the execution's status of a 200
	worker            string // the worker that ran it
	stdout            string
	shapeErr          string // what is wrong with a non-200's body, if anything
	err               error  // a transport failure: no HTTP response at all
}

func (o outcome) String() string {
	if o.err != nil {
		return fmt.Sprintf("%s: %v after %v", o.id, o.err, o.end.Sub(o.start).Round(time.Millisecond))
	}
	return fmt.Sprintf("%s: %d %s%s after %v", o.id, o.status, o.code, o.execStatus, o.end.Sub(o.start).Round(time.Millisecond))
}

// load is n clients sending the same execute request back to back, each
// on a keep-alive connection of its own, until stopped.
type load struct {
	t    *testing.T
	stop chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	outcomes []outcome
}

func startLoad(t *testing.T, base, tag string, clients int, body []byte) *load {
	t.Helper()
	l := &load{t: t, stop: make(chan struct{})}
	for c := range clients {
		l.wg.Go(func() {
			// A hang shows as this timeout, far past any bound asserted.
			client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer client.CloseIdleConnections()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				o := sendExecute(client, base, fmt.Sprintf("%s-%d-%d", tag, c, i), body)
				l.mu.Lock()
				l.outcomes = append(l.outcomes, o)
				l.mu.Unlock()
				if o.err != nil || o.status != 200 {
					// Failures return at once (a refused connection, no
					// workers): pause rather than spin.
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	return l
}

// finish stops the load, waits for the requests in flight, and returns
// every outcome.
func (l *load) finish() []outcome {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.outcomes)
}

func (l *load) snapshot() []outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.outcomes)
}

// sendExecute posts one execute request and reads its answer whole.
func sendExecute(client *http.Client, base, id string, body []byte) outcome {
	o := outcome{id: id, start: time.Now()}
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { o.wrote = time.Now() }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
		"POST", base+"/api/wasm/execute", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", id)
	res, err := client.Do(req)
	if err != nil {
		o.err, o.end = err, time.Now()
		return o
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	o.end = time.Now()
	if err != nil {
		o.err = fmt.Errorf("status %d, then reading the body: %w", res.StatusCode, err)
		return o
	}
	o.status = res.StatusCode
	if o.status == 200 {
		var r execResult
		if err := json.Unmarshal(b, &r); err != nil {
			o.shapeErr = fmt.Sprintf("200 body is not an execution: %v: %s", err, short(b))
		}
		o.execStatus, o.worker, o.stdout = r.Status, r.Worker, deref(r.Stdout)
		return o
	}
	var e errorBody
	switch err := json.Unmarshal(b, &e); {
	case err != nil || e.Error == nil:
		o.shapeErr = fmt.Sprintf("not the error shape: %s", short(b))
	case e.Error.Code == "" || e.Error.Message == "":
		o.shapeErr = fmt.Sprintf("error without code or message: %s", short(b))
	case e.Error.RequestID != id:
		o.shapeErr = fmt.Sprintf("request_id %q; want %q", e.Error.RequestID, id)
	default:
		o.code, o.message = e.Error.Code, e.Error.Message
	}
	return o
}

func executeBody(moduleID string, timeoutMS int) []byte {
	b, _ := json.Marshal(map[string]any{"module_id": moduleID, "timeout_ms": timeoutMS})
	return b
}

// countRequests counts usage records by request id, straight from the
// platform's database.
func countRequests(t *testing.T, dbURL string, ids []string) (int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(DISTINCT request_id) FROM executions WHERE request_id = ANY($1)`, ids).Scan(&n)
	return n, err
}

// logTime is when process p first logged msg (slog's JSON "time").
func logTime(p *process, msg string) (time.Time, bool) {
	for _, line := range strings.Split(p.out.String(), "\n") {
		var l struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == msg {
			return l.Time, true
		}
	}
	return time.Time{}, false
}

// since says how long after t0 process p logged msg, for the test's log.
func since(p *process, msg string, t0 time.Time) string {
	at, ok := logTime(p, msg)
	if !ok {
		return fmt.Sprintf("(%s never logged %q)", p.name, msg)
	}
	return at.Sub(t0).Round(time.Millisecond).String()
}

func waitExit(t *testing.T, p *process, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("%s still running %v after SIGTERM", p.name, within)
		return -1
	}
}

// TestFaultNATSRestart restarts the NATS server under steady executions:
// every request ends within its bound with a result or a clear error, both
// programs reconnect on their own, and the JetStream payload bucket (kept
// in the server's store directory) serves large bodies again.
func TestFaultNATSRestart(t *testing.T) {
	nats := testenv.StartNATS(t)
	p := startPlatform(t, 1, map[string]string{
		"NATS_URL": nats.URL(),
		// Bodies above the stock 1 MiB max payload travel through JetStream.
		"MAX_INPUT_SIZE": "2MiB", "MAX_OUTPUT_SIZE": "2MiB",
		"WORKER_CONCURRENCY": "4",
	})
	sleep := p.upload("sleep", testdata.Module("sleep.wasm"))
	echo := p.upload("echo", testdata.Module("echo.wasm"))
	big := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/32) // 1.5 MiB
	bigExecute := func() (response, execResult) {
		p.t.Helper()
		return p.execute(map[string]any{"module_id": echo, "input": string(big)})
	}
	if r, res := bigExecute(); r.status != 200 || deref(res.Stdout) != string(big) {
		t.Fatalf("1.5 MiB echo before the restart = %d %s; want 200 and the input back", r.status, short(r.body))
	}

	const limitMS = 500
	bound := limitMS*time.Millisecond + executeGrace + 5*time.Second
	l := startLoad(t, p.url, "nats", 4, executeBody(sleep, limitMS))
	testenv.Eventually(t, 20*time.Second, "executions before the restart", func() bool {
		return len(l.snapshot()) >= 8
	})

	stopped := time.Now()
	nats.Stop()
	testenv.Eventually(t, 10*time.Second, "/health/ready 503 without NATS", func() bool {
		r := p.do("GET", "/health/ready", "", nil)
		return r.status == 503 && strings.Contains(string(r.body), `"nats":{"status":"error"`)
	})
	// Requests that arrive while NATS is down, besides those in flight.
	ld := startLoad(t, p.url, "natsdown", 2, executeBody(sleep, limitMS))
	time.Sleep(time.Second)
	nats.Start()
	back := time.Now()

	// Recovery: a request started after the server came back succeeded.
	firstSuccess := func(outcomes []outcome) (time.Time, bool) {
		var first time.Time
		for _, o := range outcomes {
			if o.start.After(back) && o.status == 200 && o.execStatus == "timeout" && (first.IsZero() || o.start.Before(first)) {
				first = o.start
			}
		}
		return first, !first.IsZero()
	}
	testenv.Eventually(t, 20*time.Second, "an execution to succeed after the restart", func() bool {
		_, ok := firstSuccess(l.snapshot())
		return ok
	})
	testenv.Eventually(t, 20*time.Second, "/health/ready 200 after the restart", func() bool {
		return p.do("GET", "/health/ready", "", nil).status == 200
	})
	p.waitWorkers(1)
	outcomes := append(l.finish(), ld.finish()...)
	recovered, _ := firstSuccess(outcomes)

	var inFlight, sentWhileDown, failedClearly, ok int
	codes := map[string]int{}
	messages := map[string]bool{}
	var stranded []string // the outcomes of the requests in flight at the stop
	for _, o := range outcomes {
		if o.start.Before(stopped) && o.end.After(stopped) {
			inFlight++
			stranded = append(stranded, fmt.Sprintf("%d %s%s in %v", o.status, o.code, o.execStatus, o.end.Sub(o.start).Round(time.Millisecond)))
		}
		switch {
		case o.err != nil:
			t.Errorf("%v; want an HTTP answer (NATS is not the api's listener)", o)
			continue
		case o.shapeErr != "":
			t.Errorf("%s: %d %s", o.id, o.status, o.shapeErr)
		case o.status == 200:
			ok++
			if o.execStatus != "timeout" {
				t.Errorf("%v; want status timeout (sleep past its limit)", o)
			}
		case (o.status == 502 && o.code == "worker_error") || (o.status == 503 && o.code == "no_workers") ||
			(o.status == 504 && o.code == "worker_timeout"):
			failedClearly++
		default:
			t.Errorf("%v; want 200, 502 worker_error, 503 no_workers or 504 worker_timeout", o)
		}
		if d := o.end.Sub(o.start); d > bound {
			t.Errorf("%v: took %v; want at most the limit plus the grace (%v)", o, d, bound)
		}
		if o.start.After(stopped) && o.start.Before(back) {
			sentWhileDown++
		}
		if o.status != 0 {
			codes[fmt.Sprint(o.status, " ", o.code)]++
		}
		if o.code != "" {
			messages[o.code+": "+o.message] = true
		}
	}
	if inFlight == 0 || sentWhileDown == 0 {
		t.Errorf("%d requests in flight when NATS stopped, %d sent while it was down; want some of each, or the test did not test the fault",
			inFlight, sentWhileDown)
	}
	t.Logf("NATS down %v; %d requests in all (%v): %d ok, %d failed with a clear error; the %d in flight at the stop ended %v; %d sent while down",
		back.Sub(stopped).Round(time.Millisecond), len(outcomes), codes, ok, failedClearly, inFlight, stranded, sentWhileDown)
	t.Logf("after NATS was back: api reconnected in %v, worker in %v; the first execution that succeeded was sent %v after",
		since(p.api, "nats reconnected", back), since(p.workers[0], "nats reconnected", back), recovered.Sub(back).Round(time.Millisecond))
	t.Logf("errors seen: %q", slices.Sorted(maps.Keys(messages)))

	if r, res := bigExecute(); r.status != 200 || deref(res.Stdout) != string(big) {
		t.Errorf("1.5 MiB echo after the restart = %d %s; want 200 and the input back through the payload bucket", r.status, short(r.body))
	}
}

// TestFaultPostgresStopped stops PostgreSQL under a running platform:
// writes fail with 503 database_unavailable, executions of a module the
// api and the worker hold go on, readiness turns false; when PostgreSQL
// is back everything recovers and the outage's usage records are written.
func TestFaultPostgresStopped(t *testing.T) {
	pg := testenv.StartPostgres(t)
	dbURL := pg.Database(t)
	env := map[string]string{"DATABASE_URL": dbURL}
	for k, v := range production {
		env[k] = v
	}
	p := startPlatform(t, 1, env)
	// A key, so that the outage meets authentication too: the api holds
	// the key it has just looked up.
	auth := bearer(p.createKey("ops", "admin", "pro"))
	upload := func() response {
		return p.do("POST", "/api/wasm/upload?name=hello", "application/wasm", bytes.NewReader(testdata.Module("hello.wasm")), auth...)
	}
	createKey := func() response {
		return p.do("POST", "/api/auth/keys", "application/json", strings.NewReader(`{"name":"outage"}`), auth...)
	}
	r := upload()
	var hello struct{ ID string }
	if r.status != 201 || json.Unmarshal(r.body, &hello) != nil {
		t.Fatalf("upload before the outage = %d %s; want 201", r.status, short(r.body))
	}
	execute := func(id string) response {
		return p.do("POST", "/api/wasm/execute", "application/json", strings.NewReader(`{"module_id":"`+hello.ID+`"}`),
			append([]string{"X-Request-ID", id}, auth...)...)
	}
	// Run once: the api caches the module's metadata, the worker compiles it.
	if r := execute("pg-before"); r.status != 200 || !strings.Contains(string(r.body), `"status":"ok"`) {
		t.Fatalf("execute before the outage = %d %s; want 200 ok", r.status, short(r.body))
	}
	// The pool's connections are fresh: the outage meets connections that
	// were just used, which find out only when they are used again.
	if r := p.do("GET", "/api/wasm/modules", "", nil, auth...); r.status != 200 {
		t.Fatalf("list modules before the outage = %d %s", r.status, short(r.body))
	}

	stopped := time.Now()
	pg.Stop()

	wantUnavailable := func(what string, r response) {
		t.Helper()
		if r.status != 503 || errorCode(r) != "database_unavailable" || r.header.Get("Retry-After") == "" {
			t.Errorf("%s without PostgreSQL = %d %s (Retry-After %q); want 503 database_unavailable with Retry-After",
				what, r.status, short(r.body), r.header.Get("Retry-After"))
		}
	}
	wantUnavailable("upload", upload())
	wantUnavailable("key creation", createKey())
	wantUnavailable("module listing", p.do("GET", "/api/wasm/modules", "", nil, auth...))

	const outageRuns = 10
	var ids []string
	for i := range outageRuns {
		id := fmt.Sprintf("pg-outage-%d", i)
		ids = append(ids, id)
		if r := execute(id); r.status != 200 || !strings.Contains(string(r.body), `"status":"ok"`) {
			t.Errorf("execute %d of a cached module without PostgreSQL = %d %s; want 200 ok", i, r.status, short(r.body))
		}
	}

	r = p.do("GET", "/health/ready", "", nil)
	if r.status != 503 || !strings.Contains(string(r.body), `"database":{"status":"error"`) {
		t.Errorf("/health/ready without PostgreSQL = %d %s; want 503 with the database check in error", r.status, short(r.body))
	}
	r = p.do("GET", "/health", "", nil)
	if r.status != 503 || !strings.Contains(string(r.body), `"status":"down"`) ||
		!strings.Contains(string(r.body), `"database":{"status":"error"`) {
		t.Errorf("/health without PostgreSQL = %d %s; want 503 down with the database check in error", r.status, short(r.body))
	}
	// The recorder has met the outage (and holds the records) before
	// PostgreSQL returns; otherwise the test would not test the buffer.
	testenv.Eventually(t, 20*time.Second, "a failed usage write during the outage", func() bool {
		return sum("wasmwiz_usage_write_errors_total", nil, p.scrape(p.url)) >= 1
	})
	if n := sum("wasmwiz_usage_queue_depth", nil, p.scrape(p.url)); n < outageRuns {
		t.Errorf("usage queue depth during the outage = %v; want the %d records held", n, outageRuns)
	}

	pg.Start()
	back := time.Now()
	testenv.Eventually(t, 20*time.Second, "/health/ready 200 after PostgreSQL is back", func() bool {
		return p.do("GET", "/health/ready", "", nil).status == 200
	})
	ready := time.Since(back)
	if r := upload(); r.status != 201 {
		t.Errorf("upload after PostgreSQL is back = %d %s; want 201", r.status, short(r.body))
	}
	if r := createKey(); r.status != 201 {
		t.Errorf("key creation after PostgreSQL is back = %d %s; want 201", r.status, short(r.body))
	}
	testenv.Eventually(t, 30*time.Second, "the outage's usage records written", func() bool {
		n, err := countRequests(t, dbURL, ids)
		return err == nil && n == outageRuns
	})
	written := time.Since(back)
	m := p.scrape(p.url)
	if d := sum("wasmwiz_usage_dropped_total", nil, m); d != 0 {
		t.Errorf("usage records dropped = %v; want 0", d)
	}
	t.Logf("PostgreSQL down %v; ready again %v after its return, outage usage records written %v after it (%v failed writes)",
		back.Sub(stopped).Round(time.Millisecond), ready.Round(time.Millisecond), written.Round(time.Millisecond),
		sum("wasmwiz_usage_write_errors_total", nil, m))
}

// TestFaultAPISIGTERMUnderLoad sends SIGTERM to the api while clients keep
// executions in flight: every request the api had received is answered in
// full, and the usage record of every answered execution is written.
func TestFaultAPISIGTERMUnderLoad(t *testing.T) {
	p := startPlatform(t, 1, map[string]string{"WORKER_CONCURRENCY": "8"})
	sleep := p.upload("sleep", testdata.Module("sleep.wasm"))

	const clients, limitMS = 6, 1500
	l := startLoad(t, p.url, "term", clients, executeBody(sleep, limitMS))
	// Every client has a request in flight, and some have had answers on
	// their keep-alive connection already.
	testenv.Eventually(t, 20*time.Second, "steady load", func() bool {
		return len(l.snapshot()) >= clients
	})
	time.Sleep(limitMS * time.Millisecond / 2)

	signalled := time.Now()
	p.api.cmd.Process.Signal(syscall.SIGTERM)
	code := waitExit(t, p.api, limitMS*time.Millisecond+executeGrace+15*time.Second)
	outcomes := l.finish()
	if code != 0 {
		t.Errorf("api exit code after SIGTERM = %d; want 0\n%s", code, tail(p.api.out.String(), 20))
	}
	// Requests written in the moment before the server closed its
	// listener and idle connections race the close (the server may not
	// have read them yet); they are counted, not judged.
	shutdown, ok := logTime(p.api, "shutting down")
	if !ok {
		t.Fatalf("api never logged the start of its shutdown:\n%s", tail(p.api.out.String(), 20))
	}
	const race = 50 * time.Millisecond

	var inFlight, answered, refused, raced int
	var answeredIDs []string
	for _, o := range outcomes {
		sentBefore := !o.wrote.IsZero() && o.wrote.Before(shutdown.Add(-race))
		if o.err == nil && o.status == 200 && o.shapeErr == "" {
			answered++
			answeredIDs = append(answeredIDs, o.id)
		}
		switch {
		case sentBefore:
			if o.end.After(signalled) {
				inFlight++
			}
			if o.err != nil || o.status != 200 || o.shapeErr != "" || o.execStatus != "timeout" {
				t.Errorf("%v %s; want a full 200 for a request sent before the shutdown", o, o.shapeErr)
			}
		case o.err == nil && (o.status != 200 || o.shapeErr != ""):
			t.Errorf("%v %s; want any request the api answers answered in full", o, o.shapeErr)
		case o.err != nil && strings.Contains(o.err.Error(), "connection refused"):
			refused++
		case o.err != nil:
			raced++
			t.Logf("sent in the last %v before the shutdown or after it: %v", race, o)
		}
	}
	if inFlight == 0 {
		t.Errorf("no request was in flight at SIGTERM; the test did not test the fault")
	}
	t.Logf("SIGTERM: %d requests in flight answered in full (%d answered in all); api exit code %d; afterwards %d new connections refused (the listener is closed: expected), %d raced the close",
		inFlight, answered, p.api.cmd.ProcessState.ExitCode(), refused, raced)
	t.Logf("api stopped %s after SIGTERM", since(p.api, "stopped", signalled))

	// The recorder's last flush ran before the api exited.
	n, err := countRequests(t, p.env["DATABASE_URL"], answeredIDs)
	if err != nil {
		t.Fatalf("count usage records: %v", err)
	}
	if n != len(answeredIDs) {
		t.Errorf("usage records of the %d answered executions = %d; want every one written before the api exited", len(answeredIDs), n)
	}
}

// TestAPIShutdownDelay: with SHUTDOWN_DELAY the api, once signalled, stays
// up but not ready, so that a load balancer stops sending it connections
// before the listener closes: new connections are still answered (asked
// to close), readiness is 503, and the process then exits 0.
func TestAPIShutdownDelay(t *testing.T) {
	const delay = 2 * time.Second
	p := startPlatform(t, 1, map[string]string{"SHUTDOWN_DELAY": delay.String()})
	hello := p.upload("hello", testdata.Module("hello.wasm"))
	signalled := time.Now()
	p.api.cmd.Process.Signal(syscall.SIGTERM)
	testenv.Eventually(t, delay, "readiness 503 while draining", func() bool {
		return p.do("GET", "/health/ready", "", nil).status == 503
	})
	// A new connection during the delay is served in full.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := client.Post(p.url+"/api/wasm/execute", "application/json", strings.NewReader(`{"module_id":"`+hello+`"}`))
	if err != nil {
		t.Fatalf("execute on a new connection while draining: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !res.Close {
		t.Errorf("execute while draining = %d (close %v) %s; want 200 asking the client to close", res.StatusCode, res.Close, short(body))
	}
	if since := time.Since(signalled); since >= delay {
		t.Fatalf("the checks took %v, past the %v delay; the test did not test the delay", since, delay)
	}
	if code := waitExit(t, p.api, delay+30*time.Second); code != 0 {
		t.Errorf("api exit code = %d; want 0", code)
	}
	if took := time.Since(signalled); took < delay {
		t.Errorf("api exited %v after SIGTERM; want it to wait SHUTDOWN_DELAY (%v) first", took, delay)
	}
}

// TestFaultWorkerSIGTERMUnderLoad sends SIGTERM to one of two saturated
// workers: it stops taking work, finishes (or hands on) what it holds,
// and exits 0; no request fails.
func TestFaultWorkerSIGTERMUnderLoad(t *testing.T) {
	p := startPlatform(t, 2, map[string]string{"WORKER_CONCURRENCY": "2"})
	sleep := p.upload("sleep", testdata.Module("sleep.wasm"))

	// Six clients on four slots: the workers run two each and hold more,
	// so the drain meets both running and waiting executions.
	const clients, limitMS = 6, 600
	l := startLoad(t, p.url, "drain", clients, executeBody(sleep, limitMS))
	testenv.Eventually(t, 20*time.Second, "both workers busy", func() bool {
		seen := map[string]bool{}
		for _, o := range l.snapshot() {
			seen[o.worker] = true
		}
		return seen["w1"] && seen["w2"]
	})

	victim := p.workers[0]
	// Signal w1 while it holds an execution: having been busy once does
	// not mean it is now (CI once caught it idle between requests, and the
	// drain had nothing to drain). Executions last 600 ms, the check a few.
	testenv.Eventually(t, 20*time.Second, "w1 holding an execution", func() bool {
		m, _ := workerMetrics(t, victim)
		return m["wasmwiz_worker_executions_in_flight"] >= 1
	})
	signalled := time.Now()
	victim.cmd.Process.Signal(syscall.SIGTERM)
	code := waitExit(t, victim, limitMS*time.Millisecond+20*time.Second)
	exited := time.Now()
	p.waitWorkers(1)
	// Keep the load on the remaining worker for a moment.
	testenv.Eventually(t, 20*time.Second, "executions on w2 after w1 left", func() bool {
		n := 0
		for _, o := range l.snapshot() {
			if o.start.After(exited) && o.worker == "w2" {
				n++
			}
		}
		return n >= clients
	})
	outcomes := l.finish()

	if code != 0 {
		t.Errorf("draining worker's exit code = %d; want 0", code)
	}
	if out := victim.out.String(); !strings.Contains(out, `"msg":"stopped"`) || strings.Contains(out, "drain cut short") {
		t.Errorf("draining worker did not drain cleanly:\n%s", tail(out, 15))
	}
	var drained, afterOnW1 int
	for _, o := range outcomes {
		if o.err != nil || o.status != 200 || o.shapeErr != "" || o.execStatus != "timeout" {
			t.Errorf("%v %s; want 200 timeout for every request (no accepted execution dropped)", o, o.shapeErr)
		}
		if o.worker == "w1" && o.end.After(signalled) {
			drained++
		}
		if o.worker == "w1" && o.start.After(exited) {
			afterOnW1++
		}
	}
	if drained == 0 {
		t.Errorf("w1 finished no execution after SIGTERM; the test did not test the drain")
	}
	if afterOnW1 != 0 {
		t.Errorf("%d executions sent after w1 exited ran on w1", afterOnW1)
	}
	t.Logf("worker SIGTERM: %d requests, all 200; w1 finished %d after the signal and exited %v after it",
		len(outcomes), drained, exited.Sub(signalled).Round(time.Millisecond))
}
