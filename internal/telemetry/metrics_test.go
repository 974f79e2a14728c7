package telemetry

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/wasmwiz/wasmwiz/internal/runner"
)

// expose renders the named metrics of g in the text format, in the order
// of names.
func expose(t *testing.T, g prometheus.Gatherer, names ...string) string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, name := range names {
		i := slices.IndexFunc(mfs, func(mf *dto.MetricFamily) bool { return mf.GetName() == name })
		if i < 0 {
			t.Errorf("no metric %s gathered", name)
			continue
		}
		if _, err := expfmt.MetricFamilyToText(&buf, mfs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return buf.String()
}

// compare reports how the named metrics differ from want (text format).
func compare(t *testing.T, g prometheus.Gatherer, want string, names ...string) {
	t.Helper()
	if got := expose(t, g, names...); got != strings.TrimPrefix(want, "\n") {
		t.Errorf("metrics =\n%s\nwant\n%s", got, want)
	}
}

func TestWorkerMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewWorkerMetrics(reg)
	stats := runner.CacheStats{Hits: 5, Misses: 2, Compiles: 2, Evictions: 1, Bytes: 4096, Entries: 1}
	reg.MustRegister(NewModuleCacheCollector(func() runner.CacheStats { return stats }, 1<<20))
	inFlight := 1
	RegisterWorkerSlots(reg, func() int { return inFlight }, 4)

	m.Executed("ok", 2*time.Millisecond, time.Millisecond, 65536)
	m.Executed("ok", 3*time.Millisecond, time.Millisecond, 131072)
	m.Executed("trap", time.Millisecond, time.Millisecond, 65536)
	m.Executed("timeout", time.Second, time.Millisecond, 65536)
	m.Executed("surprise", time.Millisecond, time.Millisecond, 65536)
	m.Failed("module_not_found")
	m.Failed("not a code")
	m.Forwarded()
	m.Compiled(5 * time.Millisecond)

	want := `
# HELP wasmwiz_executions_total Executions run to an answer, by status (ok, exit, trap, timeout, memory_limit).
# TYPE wasmwiz_executions_total counter
wasmwiz_executions_total{status="exit"} 0
wasmwiz_executions_total{status="memory_limit"} 0
wasmwiz_executions_total{status="ok"} 2
wasmwiz_executions_total{status="other"} 1
wasmwiz_executions_total{status="timeout"} 1
wasmwiz_executions_total{status="trap"} 1
# HELP wasmwiz_execution_failures_total Execution requests the worker could not run, by code (module_not_found, invalid_module, internal).
# TYPE wasmwiz_execution_failures_total counter
wasmwiz_execution_failures_total{code="internal"} 1
wasmwiz_execution_failures_total{code="invalid_module"} 0
wasmwiz_execution_failures_total{code="module_not_found"} 1
# HELP wasmwiz_worker_forwards_total Execution requests passed on to the queue group because every slot of this worker was taken.
# TYPE wasmwiz_worker_forwards_total counter
wasmwiz_worker_forwards_total 1
# HELP wasmwiz_module_cache_hits_total Executions that found their module compiled in the cache.
# TYPE wasmwiz_module_cache_hits_total counter
wasmwiz_module_cache_hits_total 5
# HELP wasmwiz_module_cache_misses_total Executions that had to wait for their module to be compiled (concurrent misses share one compilation).
# TYPE wasmwiz_module_cache_misses_total counter
wasmwiz_module_cache_misses_total 2
# HELP wasmwiz_module_cache_evictions_total Compiled modules dropped to stay within MODULE_CACHE_BYTES.
# TYPE wasmwiz_module_cache_evictions_total counter
wasmwiz_module_cache_evictions_total 1
# HELP wasmwiz_module_cache_bytes Estimated size of the compiled modules in the cache.
# TYPE wasmwiz_module_cache_bytes gauge
wasmwiz_module_cache_bytes 4096
# HELP wasmwiz_module_cache_entries Compiled modules in the cache.
# TYPE wasmwiz_module_cache_entries gauge
wasmwiz_module_cache_entries 1
# HELP wasmwiz_worker_executions_in_flight Executions holding one of this worker's slots.
# TYPE wasmwiz_worker_executions_in_flight gauge
wasmwiz_worker_executions_in_flight 1
# HELP wasmwiz_worker_concurrency Executions this worker runs at once (WORKER_CONCURRENCY).
# TYPE wasmwiz_worker_concurrency gauge
wasmwiz_worker_concurrency 4
`
	names := []string{"wasmwiz_executions_total", "wasmwiz_execution_failures_total", "wasmwiz_worker_forwards_total",
		"wasmwiz_module_cache_hits_total", "wasmwiz_module_cache_misses_total", "wasmwiz_module_cache_evictions_total",
		"wasmwiz_module_cache_bytes", "wasmwiz_module_cache_entries",
		"wasmwiz_worker_executions_in_flight", "wasmwiz_worker_concurrency"}
	compare(t, reg, want, names...)
	for name, n := range map[string]int{
		"wasmwiz_execution_duration_seconds": 5, "wasmwiz_execution_queue_seconds": 5,
		"wasmwiz_execution_memory_peak_bytes": 5, "wasmwiz_module_compile_seconds": 1,
	} {
		if got := histogramCount(t, reg, name); got != uint64(n) {
			t.Errorf("%s has %d observations; want %d", name, got, n)
		}
	}
	// The cache collector reads the runner at each scrape.
	stats.Hits = 6
	compare(t, reg, `
# HELP wasmwiz_module_cache_hits_total Executions that found their module compiled in the cache.
# TYPE wasmwiz_module_cache_hits_total counter
wasmwiz_module_cache_hits_total 6
`, "wasmwiz_module_cache_hits_total")
}

func TestAPIMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewAPIMetrics(reg)
	again := NewAPIMetrics(reg) // a second server on the same registry shares the series
	m.RequestStarted()
	m.Observe("/health", "GET", 200, time.Millisecond)
	again.Observe("/health", "GET", 200, time.Millisecond)
	m.NoResponders()
	again.Timeout()
	if got := histogramCount(t, reg, "wasmwiz_http_request_duration_seconds"); got != 2 {
		t.Errorf("wasmwiz_http_request_duration_seconds has %d observations; want 2", got)
	}
	want := `
# HELP wasmwiz_http_requests_total HTTP requests answered, by route pattern ("unmatched" for no route), method and status code.
# TYPE wasmwiz_http_requests_total counter
wasmwiz_http_requests_total{method="GET",route="/health",status="200"} 2
# HELP wasmwiz_http_requests_in_flight HTTP requests being answered now.
# TYPE wasmwiz_http_requests_in_flight gauge
wasmwiz_http_requests_in_flight 1
# HELP wasmwiz_nats_no_responders_total Executions NATS refused at once because no worker was subscribed (503 no_workers).
# TYPE wasmwiz_nats_no_responders_total counter
wasmwiz_nats_no_responders_total 1
# HELP wasmwiz_nats_timeouts_total Executions whose worker did not reply within the time limit plus the grace (504 worker_timeout).
# TYPE wasmwiz_nats_timeouts_total counter
wasmwiz_nats_timeouts_total 1
`
	compare(t, reg, want, "wasmwiz_http_requests_total",
		"wasmwiz_http_requests_in_flight", "wasmwiz_nats_no_responders_total", "wasmwiz_nats_timeouts_total")
	m.RequestEnded()
}

// Every metric follows Prometheus' naming conventions, as promlint checks
// them (units in names, _total on counters, help text).
func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	api := NewAPIMetrics(reg)
	api.Observe("/health", "GET", 200, time.Millisecond)
	w := NewWorkerMetrics(reg)
	w.Executed("ok", time.Millisecond, time.Millisecond, 65536)
	w.Compiled(time.Millisecond)
	reg.MustRegister(NewModuleCacheCollector(func() runner.CacheStats { return runner.CacheStats{} }, 1<<20))
	RegisterWorkerSlots(reg, func() int { return 0 }, 1)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}

func histogramCount(t *testing.T, g prometheus.Gatherer, name string) uint64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}
