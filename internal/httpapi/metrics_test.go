package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/wasmwiz/wasmwiz/docs"
	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/config"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/runner"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
	"github.com/wasmwiz/wasmwiz/testdata"
)

// metricsAPI is a development server (no credentials needed) whose
// executor answers with err, and the registry it exports.
func metricsAPI(t *testing.T, execErr *error) (*Server, *prometheus.Registry) {
	t.Helper()
	st, _ := testenv.Store(t)
	cfg, err := config.Load(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	v, err := runner.NewValidator(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close(context.Background()) })
	reg := prometheus.NewRegistry()
	s := New(Deps{
		Config: cfg, Logger: slog.New(slog.DiscardHandler), Store: st, Validator: v,
		Executor: executorFunc(func(context.Context, protocol.Request) (protocol.Reply, error) {
			return protocol.Reply{}, *execErr
		}),
		Keys:    auth.NewService(st, auth.Options{Development: true}),
		Metrics: reg,
		Version: "test",
	})
	return s, reg
}

// series returns the value of every series of a counter or the sample
// count of every series of a histogram, keyed by its labels
// ("method=GET,route=/health,status=200").
func series(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[labelString(m.GetLabel())] = value(m)
		}
	}
	return out
}

func labelString(ls []*dto.LabelPair) string {
	parts := make([]string, 0, len(ls))
	for _, l := range ls {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(parts, ",")
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

func TestHTTPMetrics(t *testing.T) {
	var execErr error
	s, reg := metricsAPI(t, &execErr)
	do := func(method, path, contentType string, body []byte) int {
		t.Helper()
		req := httptest.NewRequest(method, path, bytes.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := do("POST", "/api/wasm/upload?name=hello", "application/wasm", testdata.Module("hello")); code != 201 {
		t.Fatalf("upload hello = %d; want 201", code)
	}
	var list struct{ Modules []struct{ ID string } }
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/api/wasm/modules", nil))
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || len(list.Modules) != 1 {
		t.Fatalf("list modules = %s, %v; want one", rec.Body, err)
	}
	hello := list.Modules[0].ID

	requests := []struct {
		method, path, contentType, body string
		execErr                         error
		status                          int
	}{
		{"GET", "/api/wasm/modules/" + hello, "", "", nil, 200},
		{"GET", "/api/wasm/modules/0192f5e4-0000-7000-8000-000000000001", "", "", nil, 404},
		{"GET", "/api/wasm/modules/0192f5e4-0000-7000-8000-000000000002", "", "", nil, 404},
		{"GET", "/nope/1", "", "", nil, 404},
		{"GET", "/nope/2", "", "", nil, 404},
		{"GET", "/api/nope", "", "", nil, 404},
		{"PUT", "/health/live", "", "", nil, 405},
		{"BREW", "/health/live", "", "", nil, 405},
		{"GET", "/health/live", "", "", nil, 200},
		{"POST", "/api/wasm/execute", "application/json", `{"module_id":"` + hello + `"}`, protocol.ErrNoWorkers, 503},
		{"POST", "/api/wasm/execute", "application/json", `{"module_id":"` + hello + `"}`,
			fmt.Errorf("execute x: %w: %w", protocol.ErrTimeout, context.DeadlineExceeded), 504},
		{"POST", "/api/wasm/execute", "application/json", `{"module_id":"` + hello + `"}`, protocol.ErrTimeout, 504},
	}
	for _, r := range requests {
		execErr = r.execErr
		if code := do(r.method, r.path, r.contentType, []byte(r.body)); code != r.status {
			t.Errorf("%s %s = %d; want %d", r.method, r.path, code, r.status)
		}
	}

	t.Run("requests by route pattern", func(t *testing.T) {
		got := series(t, reg, "wasmwiz_http_requests_total")
		want := map[string]float64{
			"method=POST,route=/api/wasm/upload,status=201":     1,
			"method=GET,route=/api/wasm/modules,status=200":     1,
			"method=GET,route=/api/wasm/modules/:id,status=200": 1,
			"method=GET,route=/api/wasm/modules/:id,status=404": 2,
			"method=GET,route=unmatched,status=404":             3,
			"method=PUT,route=/health/live,status=405":          1,
			"method=other,route=/health/live,status=405":        1,
			"method=GET,route=/health/live,status=200":          1,
			"method=POST,route=/api/wasm/execute,status=503":    1,
			"method=POST,route=/api/wasm/execute,status=504":    2,
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("wasmwiz_http_requests_total{%s} = %v; want %v", k, got[k], v)
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("wasmwiz_http_requests_total{%s} exists; want only the series of route patterns %v", k, want)
			}
		}
	})
	t.Run("duration by route pattern", func(t *testing.T) {
		got := series(t, reg, "wasmwiz_http_request_duration_seconds")
		if n := got["method=GET,route=/api/wasm/modules/:id"]; n != 3 {
			t.Errorf("wasmwiz_http_request_duration_seconds{GET /api/wasm/modules/:id} has %v observations; want 3", n)
		}
		if n := got["method=GET,route=unmatched"]; n != 3 {
			t.Errorf("wasmwiz_http_request_duration_seconds{GET unmatched} has %v observations; want 3", n)
		}
		if len(got) != 8 {
			t.Errorf("wasmwiz_http_request_duration_seconds has %d series; want 8 (route × method): %v", len(got), got)
		}
	})
	t.Run("nats outcomes", func(t *testing.T) {
		for name, want := range map[string]float64{"wasmwiz_nats_no_responders_total": 1, "wasmwiz_nats_timeouts_total": 2} {
			if got := series(t, reg, name)[""]; got != want {
				t.Errorf("%s = %v; want %v", name, got, want)
			}
		}
	})
	t.Run("nothing left in flight", func(t *testing.T) {
		if got := series(t, reg, "wasmwiz_http_requests_in_flight")[""]; got != 0 {
			t.Errorf("wasmwiz_http_requests_in_flight = %v after every request ended; want 0", got)
		}
	})
}

// Two servers on one registry (as tests build them) share the metrics
// rather than panic.
func TestHTTPMetricsSharedRegistry(t *testing.T) {
	var execErr error
	s, reg := metricsAPI(t, &execErr)
	other := New(Deps{Config: s.cfg, Logger: s.log, Store: s.store, Validator: s.validator, Executor: s.exec, Keys: s.keys, Metrics: reg})
	for _, srv := range []http.Handler{s, other} {
		srv.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/health/live", nil))
	}
	if got := series(t, reg, "wasmwiz_http_requests_total")["method=GET,route=/health/live,status=200"]; got != 2 {
		t.Errorf("GET /health/live on two servers of one registry counted %v; want 2", got)
	}
}

func TestOpenAPIServed(t *testing.T) {
	var execErr error
	s, _ := metricsAPI(t, &execErr)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/openapi.json", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json; charset=utf-8" ||
		!bytes.Equal(rec.Body.Bytes(), docs.OpenAPI()) {
		t.Errorf("GET /openapi.json = %d %q, %d bytes; want 200 JSON, docs/openapi.json (%d bytes)",
			rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len(), len(docs.OpenAPI()))
	}
	var doc struct{ OpenAPI string }
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("served document has openapi %q, %v; want 3.x", doc.OpenAPI, err)
	}
}
