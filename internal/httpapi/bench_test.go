package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/telemetry"
	"github.com/wasmwiz/wasmwiz/testdata"
)

// BenchmarkExecuteHandler measures the api's own work for one JSON execute
// of a cached module, in-process and without the network: the API key's
// authentication, the limits (the key's are raised, so they are leased as
// in scripts/bench.sh), reading and validating the body, the module from
// the cache, the usage record, the access log line (formatted, then
// discarded) and the JSON answer.
// The executor answers at once with hello's reply, so what is measured is
// what the api adds to an execute besides HTTP I/O and NATS.
//
//	go test -run '^$' -bench ExecuteHandler -benchmem -count 5 ./internal/httpapi/
func BenchmarkExecuteHandler(b *testing.B) {
	env := map[string]string{"RATE_LIMIT_PRO": "1000000000", "DAILY_QUOTA_PRO": "1000000000"}
	for k, v := range productionEnv {
		env[k] = v
	}
	reply := protocol.Reply{Status: "ok", Stdout: []byte("hello, world\n"), Duration: 30 * time.Microsecond,
		QueueTime: 40 * time.Microsecond, MemoryPeak: 65536, Worker: "w1", CacheHit: true}
	a := newTestAPI(b, env, executorFunc(func(context.Context, protocol.Request) (protocol.Reply, error) {
		return reply, nil
	}))
	// Info, as in production: the per-execute debug line is not formatted.
	a.srv.log = telemetry.NewLogger(io.Discard, slog.LevelInfo, "api")
	_, secret, err := a.srv.keys.Bootstrap(context.Background(), auth.NewKeyRequest{Name: "bench", Owner: "bench", Role: "user", Tier: "pro"})
	if err != nil {
		b.Fatal(err)
	}
	do := func(method, path, contentType string, body []byte) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secret)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		rec := httptest.NewRecorder()
		a.srv.ServeHTTP(rec, req)
		return rec
	}
	up := do("POST", "/api/wasm/upload?name=hello", "application/wasm", testdata.Module("hello"))
	if up.Code != http.StatusCreated {
		b.Fatalf("upload = %d %s; want 201", up.Code, up.Body)
	}
	var m struct{ ID string }
	if err := json.Unmarshal(up.Body.Bytes(), &m); err != nil || m.ID == "" {
		b.Fatalf("upload answer %s: %v", up.Body, err)
	}
	body := []byte(`{"module_id":"` + m.ID + `","input":"hi"}`)
	if rec := do("POST", "/api/wasm/execute", "application/json", body); rec.Code != http.StatusOK {
		b.Fatalf("execute = %d %s; want 200", rec.Code, rec.Body)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if rec := do("POST", "/api/wasm/execute", "application/json", body); rec.Code != http.StatusOK {
			b.Fatalf("execute = %d %s; want 200", rec.Code, rec.Body)
		}
	}
}
