package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/telemetry"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
	"github.com/wasmwiz/wasmwiz/internal/usage"
	"github.com/wasmwiz/wasmwiz/testdata"
)

// recorders are a test server's usage recorder and auditor.
type recorders struct {
	usage   *usage.Recorder[store.Execution]
	auditor *usage.Auditor
	logs    *testenv.SyncBuffer // the auditor's log lines
}

// withRecorders gives a test server a usage recorder and an auditor on its
// database, closed when the test ends. Tests call flush before reading.
func (a *testAPI) withRecorders(t *testing.T) *recorders {
	t.Helper()
	logs := &testenv.SyncBuffer{}
	log := telemetry.NewLogger(logs, slog.LevelInfo, "api")
	rec, err := usage.NewExecutionRecorder(a.store, log, nil, usage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	aud, err := usage.NewAuditor(a.store, log, nil, usage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec.Start()
	aud.Start()
	t.Cleanup(func() {
		rec.Close(context.Background())
		aud.Close(context.Background())
	})
	a.srv.usage, a.srv.auditor = rec, aud
	return &recorders{usage: rec, auditor: aud, logs: logs}
}

func (r *recorders) flush(t *testing.T) {
	t.Helper()
	if err := r.usage.Flush(context.Background()); err != nil {
		t.Fatalf("flush usage = %v", err)
	}
	if err := r.auditor.Flush(context.Background()); err != nil {
		t.Fatalf("flush audit = %v", err)
	}
}

// scriptedExecutor answers as the execution's stdin says: a runner status,
// or a platform failure.
func scriptedExecutor() Executor {
	return executorFunc(func(_ context.Context, req protocol.Request) (protocol.Reply, error) {
		reply := protocol.Reply{Worker: "fake-worker", Duration: 2 * time.Millisecond, QueueTime: time.Millisecond,
			MemoryPeak: 1 << 16, Stdout: []byte("hello"), Stderr: []byte("!")}
		switch in := string(req.Stdin); in {
		case "worker_timeout":
			return protocol.Reply{}, fmt.Errorf("%w: deadline", protocol.ErrTimeout)
		case "no_workers":
			return protocol.Reply{}, protocol.ErrNoWorkers
		case "worker_error":
			return protocol.Reply{Worker: "fake-worker", Failure: &protocol.Failure{Code: protocol.FailureInternal, Message: "disk full"}}, nil
		case "exit":
			reply.Status, reply.ExitCode = "exit", 3
		default:
			reply.Status = in
		}
		return reply, nil
	})
}

func (a *testAPI) uploadAs(t *testing.T, key, name string) moduleJSON {
	t.Helper()
	r := a.do(t, "POST", "/api/wasm/upload?name="+name, "application/wasm", bytes.NewReader(testdata.Module("hello.wasm")), bearer(key)...)
	if r.status != 201 {
		t.Fatalf("upload %s = %d %s", name, r.status, r.body)
	}
	var m moduleJSON
	r.json(t, &m)
	return m
}

func (a *testAPI) executeAs(t *testing.T, key, moduleID, input string) response {
	t.Helper()
	body := fmt.Sprintf(`{"module_id":%q,"input":%q}`, moduleID, input)
	return a.do(t, "POST", "/api/wasm/execute", "application/json", strings.NewReader(body), bearer(key)...)
}

func (a *testAPI) usageOf(t *testing.T, key, query string) (response, usageReportJSON) {
	t.Helper()
	r := a.do(t, "GET", "/api/usage"+query, "", nil, bearer(key)...)
	var u usageReportJSON
	if r.status == 200 {
		r.json(t, &u)
	}
	return r, u
}

func TestUsage(t *testing.T) {
	a := newTestAPI(t, productionEnv, scriptedExecutor())
	rec := a.withRecorders(t)
	admin := a.bootstrap(t, "ops", auth.RoleAdmin, "pro")
	alice := a.bootstrap(t, "alice", auth.RoleUser, "pro")
	bob := a.bootstrap(t, "bob", auth.RoleUser, "pro")
	am := a.uploadAs(t, alice, "alices")
	other := a.uploadAs(t, alice, "other")
	bm := a.uploadAs(t, bob, "bobs")

	runs := []struct {
		key, module, input string
		status             int
	}{
		{alice, am.ID, "ok", 200}, {alice, am.ID, "ok", 200}, {alice, am.ID, "ok", 200},
		{alice, am.ID, "exit", 200}, {alice, am.ID, "exit", 200}, {alice, other.ID, "trap", 200},
		{alice, am.ID, "worker_timeout", 504}, {alice, am.ID, "worker_error", 502},
		{alice, am.ID, "no_workers", 503}, // refused before it was sent: no record
		{bob, bm.ID, "ok", 200}, {bob, bm.ID, "timeout", 200},
	}
	for _, r := range runs {
		if got := a.executeAs(t, r.key, r.module, r.input); got.status != r.status {
			t.Fatalf("execute(%s) = %d %s; want %d", r.input, got.status, got.body, r.status)
		}
	}
	rec.flush(t)

	t.Run("alice's figures", func(t *testing.T) {
		r, u := a.usageOf(t, alice, "")
		if r.status != 200 {
			t.Fatalf("GET /api/usage = %d %s", r.status, r.body)
		}
		wantStatus := map[string]int64{"ok": 3, "exit": 2, "trap": 1, "worker_timeout": 1, "worker_error": 1}
		if u.Owner != "alice" || u.Executions != 8 || !maps.Equal(u.ByStatus, wantStatus) {
			t.Errorf("usage = owner %q, %d executions, by_status %v; want alice, 8, %v", u.Owner, u.Executions, u.ByStatus, wantStatus)
		}
		// Durations count the 6 runs in which the module ran, 2 ms each.
		if u.DurationMS.Total != 12 || u.DurationMS.P50 != 2 || u.DurationMS.P95 != 2 {
			t.Errorf("duration_ms = %+v; want total 12, p50 2, p95 2", u.DurationMS)
		}
		// bytes_in: every recorded execution's stdin; bytes_out: the 6
		// replies' "hello" and "!".
		in := int64(0)
		for _, r := range runs[:8] {
			in += int64(len(r.input))
		}
		if u.BytesIn != in || u.BytesOut != 6*6 {
			t.Errorf("bytes_in, bytes_out = %d, %d; want %d, %d", u.BytesIn, u.BytesOut, in, 36)
		}
		if len(u.ByModule) != 2 || u.ByModule[0].ModuleID != am.ID || u.ByModule[0].Executions != 7 ||
			u.ByModule[0].Name == nil || *u.ByModule[0].Name != "alices" || u.ByModule[1].ModuleID != other.ID {
			t.Errorf("by_module = %+v; want alices (7) then other (1)", u.ByModule)
		}
		if d := u.Until.Sub(u.Since); d != 24*time.Hour {
			t.Errorf("default window = %v; want 24h", d)
		}
	})

	t.Run("deleted module has a null name", func(t *testing.T) {
		if r := a.do(t, "DELETE", "/api/wasm/modules/"+other.ID, "", nil, bearer(alice)...); r.status != 204 {
			t.Fatalf("delete = %d", r.status)
		}
		_, u := a.usageOf(t, alice, "")
		if len(u.ByModule) != 2 || u.ByModule[1].Name != nil {
			t.Errorf("by_module after deleting other = %+v; want its name null", u.ByModule)
		}
	})

	t.Run("tenancy", func(t *testing.T) {
		tests := []struct {
			name, key, query string
			status           int
			owner            string
			executions       int64
		}{
			{"bob sees his own", bob, "", 200, "bob", 2},
			{"a user may name its own owner", alice, "?owner=alice", 200, "alice", 8},
			{"a user may not name another", alice, "?owner=bob", 403, "", 0},
			{"admin sees its own owner by default", admin, "", 200, "ops", 0},
			{"admin may name any owner", admin, "?owner=alice", 200, "alice", 8},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r, u := a.usageOf(t, tt.key, tt.query)
				if r.status != tt.status {
					t.Fatalf("GET /api/usage%s = %d %s; want %d", tt.query, r.status, r.body, tt.status)
				}
				if r.status != 200 {
					if code := r.errorCode(t); code != "forbidden" {
						t.Errorf("code = %q; want forbidden", code)
					}
					return
				}
				if u.Owner != tt.owner || u.Executions != tt.executions {
					t.Errorf("usage = %q with %d; want %q with %d", u.Owner, u.Executions, tt.owner, tt.executions)
				}
			})
		}
	})

	t.Run("time window", func(t *testing.T) {
		now := time.Now().UTC()
		q := func(since, until time.Time) string {
			return "?since=" + url.QueryEscape(since.Format(time.RFC3339Nano)) + "&until=" + url.QueryEscape(until.Format(time.RFC3339Nano))
		}
		if _, u := a.usageOf(t, alice, q(now.Add(-time.Hour), now.Add(time.Minute))); u.Executions != 8 {
			t.Errorf("last hour = %d executions; want 8", u.Executions)
		}
		if _, u := a.usageOf(t, alice, q(now.Add(-48*time.Hour), now.Add(-24*time.Hour))); u.Executions != 0 || len(u.ByStatus) != 0 || len(u.ByModule) != 0 {
			t.Errorf("yesterday = %+v; want nothing", u)
		}
		r, u := a.usageOf(t, alice, "?since="+url.QueryEscape("2025-01-01T10:00:00+02:00")+"&until=2025-01-02T00:00:00Z")
		if r.status != 200 || !u.Since.Equal(time.Date(2025, 1, 1, 8, 0, 0, 0, time.UTC)) || u.Since.Location() != time.UTC {
			t.Errorf("offset since = %d, %v; want 200 and 08:00 UTC", r.status, u.Since)
		}
	})

	t.Run("bad parameters", func(t *testing.T) {
		for _, query := range []string{
			"?since=yesterday",
			"?until=2025-13-01T00:00:00Z",
			"?since=2025-01-02T00:00:00Z&until=2025-01-01T00:00:00Z",
			"?since=2025-01-01T00:00:00Z&until=2025-01-01T00:00:00Z",
			"?since=2024-01-01T00:00:00Z&until=2025-01-01T00:00:00Z",
		} {
			r, _ := a.usageOf(t, alice, query)
			if r.status != 400 || r.errorCode(t) != "invalid_request" {
				t.Errorf("GET /api/usage%s = %d %s; want 400 invalid_request", query, r.status, r.body)
			}
		}
	})
}
