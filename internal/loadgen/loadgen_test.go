package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// No test asserts an upper bound on time beyond generous sanity: the
// machine is shared. Lower bounds follow from the server's own sleeps.

// server answers every request with handle and counts them.
func server(t *testing.T, handle func(n int64, w http.ResponseWriter, r *http.Request)) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handle(hits.Add(1)-1, w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func okJSON(_ int64, w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"status":"ok"}`)
}

// sleepy answers ok after d, or when the client gives up.
func sleepy(d time.Duration) func(int64, http.ResponseWriter, *http.Request) {
	return func(n int64, w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		okJSON(n, w, r)
	}
}

func get(url string) Request { return Request{Method: http.MethodGet, URL: url} }

// clients are the two ways a run sends: the lean client (the default for
// plain http) and net/http. Tests that count run under both.
var clients = []struct {
	name string
	new  func(conns int) *http.Client
}{
	{"lean", func(int) *http.Client { return nil }},
	{"net/http", NewClient},
}

// bothClients runs f once per client, with cfg.Client set accordingly.
func bothClients(t *testing.T, f func(t *testing.T, client func(conns int) *http.Client)) {
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) { f(t, c.new) })
	}
}

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

func TestRunCount(t *testing.T) {
	bothClients(t, testRunCount)
}

func testRunCount(t *testing.T, client func(int) *http.Client) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"closed loop", Config{Concurrency: 8, Requests: 200}},
		{"closed loop, one caller", Config{Concurrency: 1, Requests: 25}},
		{"open loop", Config{Concurrency: 8, Rate: 2000, Requests: 200}},
		{"count before duration", Config{Concurrency: 4, Requests: 30, Duration: time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, hits := server(t, okJSON)
			tt.cfg.Request = get(srv.URL)
			tt.cfg.Client = client(tt.cfg.Concurrency)
			res := run(t, tt.cfg)
			want := tt.cfg.Requests
			if res.Requests != want || hits.Load() != want {
				t.Errorf("Run requests = %d, server saw %d; want %d", res.Requests, hits.Load(), want)
			}
			if res.Succeeded != want || res.Failed != 0 || res.Unsent != 0 {
				t.Errorf("Run succeeded %d, failed %d, unsent %d; want %d, 0, 0", res.Succeeded, res.Failed, res.Unsent, want)
			}
			if res.ByHTTPStatus["200"] != want || res.ByExecStatus["ok"] != want {
				t.Errorf("Run by status = %v, by exec status %v; want 200: %d, ok: %d", res.ByHTTPStatus, res.ByExecStatus, want, want)
			}
			if res.Latency.P50 <= 0 || res.Latency.P50 > res.Latency.P99 || res.Latency.P99 > res.Latency.Max {
				t.Errorf("Run latency = %+v; want 0 < p50 <= p99 <= max", res.Latency)
			}
			if res.Throughput <= 0 {
				t.Errorf("Run throughput = %v; want > 0", res.Throughput)
			}
		})
	}
}

func TestRunDuration(t *testing.T) {
	// The closed loop sends until the end; the open loop's last send is
	// due at 99/500 s.
	for _, tt := range []struct {
		name     string
		rate     float64
		minTaken time.Duration
	}{{"closed loop", 0, 200 * time.Millisecond}, {"open loop", 500, 198 * time.Millisecond}} {
		t.Run(tt.name, func(t *testing.T) {
			srv, hits := server(t, okJSON)
			const d = 200 * time.Millisecond
			begin := time.Now()
			res := run(t, Config{Request: get(srv.URL), Concurrency: 4, Rate: tt.rate, Duration: d})
			if took := time.Since(begin); took < tt.minTaken || took > d+30*time.Second {
				t.Errorf("Run(-d %v) took %v; want at least %v", d, took, tt.minTaken)
			}
			if res.Requests == 0 || res.Requests != hits.Load() {
				t.Errorf("Run requests = %d, server saw %d; want the same, above 0", res.Requests, hits.Load())
			}
			if tt.rate > 0 {
				// 100 sends are due in 200 ms at 500/s: i/500 < 0.2 for i < 100.
				if got := res.Requests + res.Unsent; got != 100 {
					t.Errorf("Run sent %d + unsent %d = %d; want 100 due", res.Requests, res.Unsent, got)
				}
			}
		})
	}
}

// TestOpenLoopRate checks that the open loop keeps to its schedule: it
// cannot finish before the last send is due.
func TestOpenLoopRate(t *testing.T) {
	srv, hits := server(t, okJSON)
	const rate, n = 200.0, 40
	begin := time.Now()
	res := run(t, Config{Request: get(srv.URL), Concurrency: 8, Rate: rate, Requests: n})
	took := time.Since(begin)
	if min := time.Duration(float64(n-1) / rate * float64(time.Second)); took < min {
		t.Errorf("Run(%d at %v/s) took %v; want at least %v", n, rate, took, min)
	}
	if hits.Load() != n || res.Unsent != 0 {
		t.Errorf("server saw %d, unsent %d; want %d, 0", hits.Load(), res.Unsent, n)
	}
	if res.Mode != "open" || res.TargetRate != rate || res.SendLag == nil {
		t.Errorf("Run mode %q, rate %v, send lag %v; want open, %v, present", res.Mode, res.TargetRate, res.SendLag, rate)
	}
}

// TestOpenLoopIntendedTime is coordinated omission: one caller, a server
// taking 40 ms, sends due every 10 ms. The queue grows by 30 ms per request,
// and latency must show it; a closed loop would report ~40 ms throughout.
func TestOpenLoopIntendedTime(t *testing.T) {
	const service = 40 * time.Millisecond
	srv, _ := server(t, sleepy(service))
	const n = 10
	open := run(t, Config{Request: get(srv.URL), Concurrency: 1, Rate: 100, Requests: n})
	// Request 9 is due at 90 ms and cannot end before 10 × 40 ms.
	if want := n*service - 90*time.Millisecond; open.Latency.Max < ms(int64(want)) {
		t.Errorf("open loop max latency = %.1f ms; want at least %.1f ms (queueing behind a slow server)", open.Latency.Max, ms(int64(want)))
	}
	// Request 9 cannot start before request 8 ended at 9 × 40 ms.
	if want := 9*service - 90*time.Millisecond; open.SendLag.Max < ms(int64(want)) {
		t.Errorf("open loop max send lag = %.1f ms; want at least %.1f ms", open.SendLag.Max, ms(int64(want)))
	}

	closed := run(t, Config{Request: get(srv.URL), Concurrency: 1, Requests: 3})
	if closed.Latency.Min < ms(int64(service)) {
		t.Errorf("closed loop min latency = %.1f ms; want at least the service time %v", closed.Latency.Min, service)
	}
	if closed.SendLag != nil {
		t.Errorf("closed loop send lag = %+v; want none", closed.SendLag)
	}
}

// TestOpenLoopUnsent: a server that cannot keep up leaves sends unsent at
// the end of a timed run rather than stretching it.
func TestOpenLoopUnsent(t *testing.T) {
	srv, hits := server(t, sleepy(50*time.Millisecond))
	res := run(t, Config{Request: get(srv.URL), Concurrency: 1, Rate: 100, Duration: 200 * time.Millisecond})
	// 20 sends due; one caller at ≥ 50 ms each sends at most 5 by 200 ms.
	if got := res.Requests + res.Unsent; got != 20 {
		t.Errorf("Run sent %d + unsent %d = %d; want 20 due", res.Requests, res.Unsent, got)
	}
	if res.Unsent < 15 {
		t.Errorf("Run unsent = %d; want at least 15", res.Unsent)
	}
	if hits.Load() != res.Requests {
		t.Errorf("server saw %d; want %d", hits.Load(), res.Requests)
	}
}

func TestErrorCounting(t *testing.T) {
	bothClients(t, testErrorCounting)
}

func testErrorCounting(t *testing.T, client func(int) *http.Client) {
	answers := []struct {
		status int
		body   string
	}{
		{200, `{"execution_id":"x","status":"ok","error":null}`},
		{200, `{"execution_id":"x","status":"trap","error":"wasm error: unreachable"}`},
		{429, `{"error":{"code":"rate_limited","message":"slow down","request_id":"r"}}`},
		{503, `{"error":{"code":"no_workers","message":"none","request_id":"r"}}`},
		{500, `boom`},
	}
	srv, _ := server(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		a := answers[n%int64(len(answers))]
		w.WriteHeader(a.status)
		io.WriteString(w, a.body)
	})
	res := run(t, Config{Request: get(srv.URL), Concurrency: 4, Requests: 50, Client: client(4)})

	check := func(what string, got, want map[string]int64) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s = %v; want %v", what, got, want)
			return
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %v; want %v", what, got, want)
				return
			}
		}
	}
	check("by http status", res.ByHTTPStatus, map[string]int64{"200": 20, "429": 10, "503": 10, "500": 10})
	check("by exec status", res.ByExecStatus, map[string]int64{"ok": 10, "trap": 10})
	check("by error code", res.ByErrorCode, map[string]int64{"rate_limited": 10, "no_workers": 10, "(none)": 10})
	check("transport errors", res.TransportErrors, map[string]int64{})
	if res.Succeeded != 20 || res.Failed != 30 || res.Requests != 50 {
		t.Errorf("Run succeeded %d, failed %d of %d; want 20, 30 of 50", res.Succeeded, res.Failed, res.Requests)
	}
}

func TestTransportErrors(t *testing.T) {
	bothClients(t, testTransportErrors)
}

func testTransportErrors(t *testing.T, client func(int) *http.Client) {
	refused := func(t *testing.T) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return "http://" + addr
	}
	hangUp := func(t *testing.T) string {
		srv, _ := server(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		})
		return srv.URL
	}
	slow := func(t *testing.T) string {
		srv, _ := server(t, sleepy(time.Minute))
		return srv.URL
	}
	tests := []struct {
		name    string
		url     func(t *testing.T) string
		timeout time.Duration
		want    string
	}{
		{"connection refused", refused, 0, "connection_refused"},
		{"server hangs up", hangUp, 0, "eof"},
		{"timeout", slow, 50 * time.Millisecond, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := run(t, Config{Request: get(tt.url(t)), Concurrency: 2, Requests: 4, Timeout: tt.timeout, Client: client(2)})
			if res.TransportErrors[tt.want] != 4 || res.Failed != 4 || len(res.ByHTTPStatus) != 0 {
				t.Errorf("Run transport errors = %v, failed %d, by status %v (first: %s); want %s: 4, 4, none",
					res.TransportErrors, res.Failed, res.ByHTTPStatus, res.FirstError, tt.want)
			}
			if res.FirstError == "" {
				t.Errorf("Run first error is empty; want the first error's message")
			}
		})
	}
}

// TestExecuteRequest checks what -t execute sends, end to end from the
// command line.
func TestExecuteRequest(t *testing.T) {
	bothClients(t, func(t *testing.T, client func(int) *http.Client) {
		std := []string{}
		if client(1) != nil {
			std = []string{"-client", "std"}
		}
		testExecuteRequest(t, std)
	})
}

func testExecuteRequest(t *testing.T, extra []string) {
	type body struct {
		ModuleID string `json:"module_id"`
		Input    string `json:"input"`
	}
	srv, _ := server(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		var b body
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		err := dec.Decode(&b)
		switch {
		case r.Method != http.MethodPost, r.URL.Path != "/api/wasm/execute",
			r.Header.Get("Authorization") != "Bearer wwz_secret",
			r.Header.Get("Content-Type") != "application/json",
			err != nil, b != body{"0192-mod", "hello \"you\""}:
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":{"code":"invalid_request"}}`)
			return
		}
		io.WriteString(w, `{"status":"ok"}`)
	})
	env := map[string]string{KeyVariable: "wwz_secret"}
	args := append([]string{"-u", srv.URL + "/", "-t", "execute", "-m", "0192-mod", "-i", `hello "you"`, "-n", "6", "-c", "3"}, extra...)
	opts, err := ParseArgs(args, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatalf("ParseArgs: %v", err)
	}
	res := run(t, opts.Config)
	if res.Succeeded != 6 || res.Method != http.MethodPost {
		t.Errorf("Run succeeded %d (by code %v), method %s; want 6, POST", res.Succeeded, res.ByErrorCode, res.Method)
	}
}

func TestWarmup(t *testing.T) {
	srv, hits := server(t, okJSON)
	res := run(t, Config{Request: get(srv.URL), Concurrency: 3, Requests: 10, Warmup: 20 * time.Millisecond})
	if res.Requests != 10 {
		t.Errorf("Run requests = %d; want 10 (warm-up not counted)", res.Requests)
	}
	// Every caller sends at least once while warming up.
	if hits.Load() < 13 {
		t.Errorf("server saw %d; want at least 13 (10 + a warm-up per caller)", hits.Load())
	}
}

func TestRunCancelled(t *testing.T) {
	bothClients(t, func(t *testing.T, client func(int) *http.Client) {
		fast, _ := server(t, okJSON)
		slow, _ := server(t, sleepy(time.Hour))
		for _, url := range []string{fast.URL, slow.URL} {
			for _, rate := range []float64{0, 100} {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(100*time.Millisecond, cancel)
				res, err := Run(ctx, Config{Request: get(url), Concurrency: 2, Rate: rate, Duration: time.Hour, Client: client(2)})
				if !errors.Is(err, context.Canceled) || res == nil {
					t.Errorf("Run(rate %v) cancelled = %v, %v; want a result and context.Canceled", rate, res, err)
				}
				if url == slow.URL && res != nil && res.TransportErrors["canceled"] == 0 {
					t.Errorf("Run(rate %v) cancelled mid-request: transport errors %v; want canceled", rate, res.TransportErrors)
				}
				cancel()
			}
		}
	})
}

func TestRunInvalid(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no URL", Config{Concurrency: 1, Requests: 1}},
		{"no callers", Config{Request: get("http://x"), Requests: 1}},
		{"no end", Config{Request: get("http://x"), Concurrency: 1}},
		{"negative rate", Config{Request: get("http://x"), Concurrency: 1, Requests: 1, Rate: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Run(context.Background(), tt.cfg); err == nil {
				t.Errorf("Run(%+v) error = nil; want one", tt.cfg)
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    func(o Options) bool
		wantErr string
	}{
		{name: "defaults", args: nil, want: func(o Options) bool {
			c := o.Config
			return c.Duration == 10*time.Second && c.Requests == 0 && c.Concurrency == 10 &&
				c.Request.URL == "http://127.0.0.1:8080/health/live" && c.Request.Method == http.MethodGet &&
				c.Request.Header.Get("Authorization") == ""
		}},
		{name: "seconds", args: []string{"-d", "5"}, want: func(o Options) bool { return o.Config.Duration == 5*time.Second }},
		{name: "go duration", args: []string{"-d", "1m30s"}, want: func(o Options) bool { return o.Config.Duration == 90*time.Second }},
		{name: "count only", args: []string{"-n", "100"}, want: func(o Options) bool {
			return o.Config.Requests == 100 && o.Config.Duration == 0
		}},
		{name: "open loop", args: []string{"-r", "250", "-c", "64"}, want: func(o Options) bool {
			return o.Config.Rate == 250 && o.Config.Concurrency == 64
		}},
		{name: "key from env", args: []string{"-t", "execute", "-m", "m"}, env: map[string]string{KeyVariable: "wwz_k"},
			want: func(o Options) bool { return o.Config.Request.Header.Get("Authorization") == "Bearer wwz_k" }},
		{name: "key flag wins", args: []string{"-k", "wwz_flag"}, env: map[string]string{KeyVariable: "wwz_env"},
			want: func(o Options) bool { return o.Config.Request.Header.Get("Authorization") == "Bearer wwz_flag" }},
		{name: "json", args: []string{"-json", "-json-out", "r.json"}, want: func(o Options) bool { return o.JSON && o.JSONOut == "r.json" }},
		{name: "lean client by default", args: nil, want: func(o Options) bool { return o.Config.Client == nil }},
		{name: "std client", args: []string{"-client", "std"}, want: func(o Options) bool { return o.Config.Client != nil }},
		{name: "unknown client", args: []string{"-client", "curl"}, wantErr: "want lean or std"},
		{name: "execute without module", args: []string{"-t", "execute"}, wantErr: "-m MODULE_ID"},
		{name: "unknown target", args: []string{"-t", "ready"}, wantErr: "want health or execute"},
		{name: "bad duration", args: []string{"-d", "soon"}, wantErr: "-d"},
		{name: "zero duration", args: []string{"-d", "0"}, wantErr: "positive"},
		{name: "no callers", args: []string{"-c", "0"}, wantErr: "concurrency"},
		{name: "bad URL", args: []string{"-u", "127.0.0.1:8080"}, wantErr: "-u"},
		{name: "stray argument", args: []string{"now"}, wantErr: "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := ParseArgs(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseArgs(%q) error = %v; want one containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseArgs(%q): %v", tt.args, err)
			}
			if !tt.want(o) {
				t.Errorf("ParseArgs(%q) = %+v; not what was asked", tt.args, o)
			}
		})
	}
}

func TestReports(t *testing.T) {
	srv, _ := server(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n%2 == 1 {
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"error":{"code":"rate_limited"}}`)
			return
		}
		io.WriteString(w, `{"status":"ok"}`)
	})
	res := run(t, Config{Request: get(srv.URL), Concurrency: 1, Rate: 1000, Requests: 10})

	var text bytes.Buffer
	if err := WriteText(&text, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"open loop", "requests      10", "http status   200 5, 429 5", "error code    rate_limited 5",
		"exec status   ok 5", "p99.9", "from intended send", "send lag ms"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("WriteText = \n%s\nwant it to contain %q", text.String(), want)
		}
	}

	var js bytes.Buffer
	if err := WriteJSON(&js, res); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Mode        string           `json:"mode"`
		Requests    int64            `json:"requests"`
		ByErrorCode map[string]int64 `json:"by_error_code"`
		Latency     map[string]float64
		LatencyMS   map[string]float64 `json:"latency_ms"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("WriteJSON wrote invalid JSON: %v\n%s", err, js.String())
	}
	if back.Mode != "open" || back.Requests != 10 || back.ByErrorCode["rate_limited"] != 5 {
		t.Errorf("WriteJSON = %s; want mode open, 10 requests, rate_limited 5", js.String())
	}
	for _, k := range []string{"p50", "p90", "p99", "p99_9", "max"} {
		if _, ok := back.LatencyMS[k]; !ok {
			t.Errorf("WriteJSON latency_ms = %v; want key %q", back.LatencyMS, k)
		}
	}
}
