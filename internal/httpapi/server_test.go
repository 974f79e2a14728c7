package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/config"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/ratelimit"
	"github.com/wasmwiz/wasmwiz/internal/runner"
	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/telemetry"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

// testAPI is a server on a fresh database with the real validator.
type testAPI struct {
	*httptest.Server
	srv   *Server
	store *store.Store
	logs  *bytes.Buffer
}

type executorFunc func(ctx context.Context, req protocol.Request) (protocol.Reply, error)

func (f executorFunc) Execute(ctx context.Context, req protocol.Request) (protocol.Reply, error) {
	return f(ctx, req)
}

func newTestAPI(t testing.TB, env map[string]string, exec Executor) *testAPI {
	t.Helper()
	st, _ := testenv.Store(t)
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if exec == nil {
		exec = executorFunc(func(context.Context, protocol.Request) (protocol.Reply, error) {
			return protocol.Reply{}, protocol.ErrNoWorkers
		})
	}
	testenv.RequireRedis(t)
	ropts, _ := redis.ParseURL(testenv.RedisURL)
	rdb := redis.NewClient(ropts)
	t.Cleanup(func() { rdb.Close() })
	limiter := ratelimit.New(rdb, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), ratelimit.Config{Prefix: testenv.Prefix(t)})
	t.Cleanup(func() { limiter.Close() }) // stops its lease sweeper; before rdb.Close
	keys := auth.NewService(st, auth.Options{Salt: []byte(cfg.APISalt), JWTSecret: []byte(cfg.JWTSecret),
		JWTTTL: cfg.JWTTTL, Development: cfg.IsDevelopment()})
	return startTestAPI(t, cfg, st, exec, limiter, keys)
}

// startTestAPI serves an api on st with a real validator; limiter may be
// nil (no rate limits).
func startTestAPI(t testing.TB, cfg config.Config, st *store.Store, exec Executor, limiter RateLimiter, keys *auth.Service) *testAPI {
	t.Helper()
	v, err := runner.NewValidator(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close(context.Background()) })
	logs := &bytes.Buffer{}
	s := New(Deps{
		Config: cfg, Logger: telemetry.NewLogger(logs, slog.LevelDebug, "api"), Store: st,
		Validator: v, Executor: exec, Version: "test", Keys: keys, Limiter: limiter,
		Checks: HealthChecks{
			Database: st.Ping,
			NATS:     func(context.Context) error { return nil },
		},
	})
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return &testAPI{Server: ts, srv: s, store: st, logs: logs}
}

type response struct {
	status int
	header http.Header
	body   []byte
	close  bool // the server asked to close the connection (Go's client takes the header out)
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// errorCode checks the one error shape and returns its code.
func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var raw map[string]map[string]string
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatalf("error body %q is not JSON: %v", r.body, err)
	}
	e, ok := raw["error"]
	if !ok || len(raw) != 1 {
		t.Fatalf("error body %s; want {\"error\": {...}}", r.body)
	}
	if e["code"] == "" || e["message"] == "" || e["request_id"] == "" {
		t.Errorf("error body %s; want code, message and request_id", r.body)
	}
	if e["request_id"] != r.header.Get("X-Request-ID") {
		t.Errorf("error request_id %q != X-Request-ID %q", e["request_id"], r.header.Get("X-Request-ID"))
	}
	return e["code"]
}

func (a *testAPI) do(t *testing.T, method, path, contentType string, body io.Reader, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, a.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b, close: res.Close}
}

// multipartBody builds a form; a value of type []byte becomes a file part.
func multipartBody(t *testing.T, fields ...any) (string, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		name := fields[i].(string)
		switch v := fields[i+1].(type) {
		case []byte:
			fw, err := w.CreateFormFile(name, name+".wasm")
			if err != nil {
				t.Fatal(err)
			}
			fw.Write(v)
		case string:
			w.WriteField(name, v)
		}
	}
	w.Close()
	return w.FormDataContentType(), &buf
}

func TestCrossCutting(t *testing.T) {
	a := newTestAPI(t, nil, nil)
	a.srv.echo.GET("/test-panic", func(c echo.Context) error { panic("boom /secret/path") })

	tests := []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"unknown route", "GET", "/nope", 404, "not_found"},
		{"unknown api route", "GET", "/api/nope", 404, "not_found"},
		{"wrong method", "PUT", "/health/live", 405, "method_not_allowed"},
		{"panic", "GET", "/test-panic", 500, "internal_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := a.do(t, tt.method, tt.path, "", nil)
			if r.status != tt.status {
				t.Fatalf("%s %s = %d %s; want %d", tt.method, tt.path, r.status, r.body, tt.status)
			}
			if code := r.errorCode(t); code != tt.code {
				t.Errorf("code = %q; want %q", code, tt.code)
			}
			if strings.Contains(string(r.body), "boom") || strings.Contains(string(r.body), "/secret") {
				t.Errorf("error body leaks the panic: %s", r.body)
			}
			checkSecurityHeaders(t, r)
		})
	}
	if !strings.Contains(a.logs.String(), `"msg":"panic"`) {
		t.Errorf("panic not logged")
	}

	t.Run("request id kept", func(t *testing.T) {
		r := a.do(t, "GET", "/health/live", "", nil, "X-Request-ID", "client-id_1.2")
		if got := r.header.Get("X-Request-ID"); got != "client-id_1.2" {
			t.Errorf("X-Request-ID = %q; want the client's", got)
		}
		if !strings.Contains(a.logs.String(), `"request_id":"client-id_1.2"`) {
			t.Errorf("logs lack the client's request id")
		}
	})
	t.Run("bad request id replaced", func(t *testing.T) {
		for _, bad := range []string{"has space", strings.Repeat("x", 129), "a\"b"} {
			r := a.do(t, "GET", "/health/live", "", nil, "X-Request-ID", bad)
			if got := r.header.Get("X-Request-ID"); got == bad || !telemetry.ValidRequestID(got) {
				t.Errorf("X-Request-ID for %q = %q; want a fresh valid id", bad, got)
			}
		}
	})
}

func checkSecurityHeaders(t *testing.T, r response) {
	t.Helper()
	for h, want := range map[string]string{
		"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
	} {
		if got := r.header.Get(h); got != want {
			t.Errorf("%s = %q; want %q", h, got, want)
		}
	}
	if r.header.Get("Content-Security-Policy") == "" {
		t.Errorf("no Content-Security-Policy")
	}
	if r.header.Get("X-Request-ID") == "" {
		t.Errorf("no X-Request-ID")
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q; want application/json; charset=utf-8", ct)
	}
}

func TestHSTSOutsideDevelopment(t *testing.T) {
	a := newTestAPI(t, map[string]string{
		"ENVIRONMENT": "production", "API_SALT": strings.Repeat("s", 16), "JWT_SECRET": strings.Repeat("j", 32),
	}, nil)
	r := a.do(t, "GET", "/health/live", "", nil)
	if r.header.Get("Strict-Transport-Security") == "" {
		t.Errorf("no Strict-Transport-Security in production")
	}
	dev := newTestAPI(t, nil, nil)
	if r := dev.do(t, "GET", "/health/live", "", nil); r.header.Get("Strict-Transport-Security") != "" {
		t.Errorf("Strict-Transport-Security in development")
	}
}

func TestHealth(t *testing.T) {
	a := newTestAPI(t, nil, nil)
	if r := a.do(t, "GET", "/health/live", "", nil); r.status != 200 || !strings.Contains(string(r.body), `"ok"`) {
		t.Errorf("/health/live = %d %s", r.status, r.body)
	}
	if r := a.do(t, "GET", "/health/ready", "", nil); r.status != 200 || !strings.Contains(string(r.body), `"ready"`) {
		t.Errorf("/health/ready = %d %s", r.status, r.body)
	}
	a.srv.checks.NATS = func(context.Context) error { return fmt.Errorf("dial tcp 10.0.0.1:4222: secret detail") }
	r := a.do(t, "GET", "/health/ready", "", nil)
	if r.status != 503 || !strings.Contains(string(r.body), `"not_ready"`) || strings.Contains(string(r.body), "secret detail") {
		t.Errorf("/health/ready without NATS = %d %s; want 503 not_ready without driver detail", r.status, r.body)
	}
	r = a.do(t, "GET", "/health", "", nil)
	var h healthJSON
	r.json(t, &h)
	if r.status != 503 || h.Status != "down" || h.Checks["nats"].Status != "error" || h.Checks["database"].Status != "ok" {
		t.Errorf("/health without NATS = %d %s; want 503 down", r.status, r.body)
	}
}

// Draining: not ready (so the load balancer stops sending), still serving,
// and every response asks the client to close its connection.
func TestDraining(t *testing.T) {
	a := newTestAPI(t, nil, nil)
	if r := a.do(t, "GET", "/health/live", "", nil); r.close {
		t.Errorf("Connection: close before draining")
	}
	a.srv.StartDraining()
	r := a.do(t, "GET", "/health/ready", "", nil)
	var h healthJSON
	r.json(t, &h)
	if r.status != 503 || h.Status != "not_ready" || h.Checks["shutdown"].Status != "error" || h.Checks["database"].Status != "ok" {
		t.Errorf("/health/ready while draining = %d %s; want 503 not_ready with a shutdown check", r.status, r.body)
	}
	if r := a.do(t, "GET", "/health/live", "", nil); r.status != 200 || !r.close {
		t.Errorf("/health/live while draining = %d, close %v; want 200 with Connection: close", r.status, r.close)
	}
}
