package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wasmwiz/wasmwiz/internal/testenv"
	"github.com/wasmwiz/wasmwiz/testdata"
)

// dashboardPath is the Grafana dashboard whose queries must name metrics
// the programs export.
const dashboardPath = "../../deploy/grafana/wasmwiz-dashboard.json"

// metrics is one /metrics scrape, by family name.
type metrics map[string]*dto.MetricFamily

// scrape fetches and parses url's Prometheus text exposition.
func (p *platform) scrape(url string) metrics {
	p.t.Helper()
	r := p.doAt(url, "GET", "/metrics", "", nil)
	if r.status != 200 {
		p.t.Fatalf("GET %s/metrics = %d %s", url, r.status, short(r.body))
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(r.body))
	if err != nil {
		p.t.Fatalf("parse %s/metrics: %v", url, err)
	}
	return mfs
}

// workerURL is the base URL of a worker's METRICS_PORT.
func workerURL(t *testing.T, w *process) string {
	t.Helper()
	for _, kv := range w.cmd.Env {
		if port, ok := strings.CutPrefix(kv, "METRICS_PORT="); ok {
			return "http://127.0.0.1:" + port
		}
	}
	t.Fatalf("worker %s has no METRICS_PORT", w.name)
	return ""
}

// workerMetrics scrapes every worker.
func (p *platform) workerMetrics() []metrics {
	p.t.Helper()
	out := make([]metrics, 0, len(p.workers))
	for _, w := range p.workers {
		out = append(out, p.scrape(workerURL(p.t, w)))
	}
	return out
}

// sum adds up the series of name whose labels include want (name=value
// pairs), across scrapes: a counter's or gauge's value, a histogram's
// sample count.
func sum(name string, want map[string]string, scrapes ...metrics) float64 {
	var total float64
	for _, s := range scrapes {
		mf, ok := s[name]
		if !ok {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == k && l.GetValue() == v }) {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				total += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				total += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				total += float64(m.GetHistogram().GetSampleCount())
			case m.GetUntyped() != nil:
				total += m.GetUntyped().GetValue()
			}
		}
	}
	return total
}

// sampleNames are the names a query can use for the scraped families:
// a histogram's or summary's _bucket, _sum and _count as well.
func sampleNames(scrapes ...metrics) map[string]bool {
	names := map[string]bool{}
	for _, s := range scrapes {
		for name, mf := range s {
			names[name] = true
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM:
				names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
			case dto.MetricType_SUMMARY:
				names[name+"_sum"], names[name+"_count"] = true, true
			}
		}
	}
	return names
}

func labels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// TestMetricsEndToEnd runs a known sequence of executions on two workers
// and checks that the counters moved by exactly that much, summed over the
// workers; then that the Grafana dashboard queries only metrics the
// programs export.
func TestMetricsEndToEnd(t *testing.T) {
	p := startPlatform(t, 2, nil)
	apiBefore, workersBefore := p.scrape(p.url), p.workerMetrics()

	ids := map[string]string{}
	for _, name := range []string{"hello", "unreachable", "loop"} {
		ids[name] = p.upload(name, testdata.Module(name))
	}
	runs := []struct {
		module string
		body   map[string]any
		status string
	}{
		{"hello", nil, "ok"},
		{"hello", nil, "ok"},
		{"hello", nil, "ok"},
		{"unreachable", nil, "trap"},
		{"loop", map[string]any{"timeout_ms": 300}, "timeout"},
	}
	ranOn := map[string]map[string]bool{} // module -> workers that ran it
	for i, r := range runs {
		body := map[string]any{"module_id": ids[r.module]}
		maps.Copy(body, r.body)
		resp, res := p.execute(body)
		if resp.status != 200 || res.Status != r.status {
			t.Fatalf("run %d: execute(%s) = %d status %q; want 200 %s", i, r.module, resp.status, res.Status, r.status)
		}
		if ranOn[r.module] == nil {
			ranOn[r.module] = map[string]bool{}
		}
		ranOn[r.module][res.Worker] = true
	}
	// A module is compiled once on each worker that runs it; its other runs
	// there are hits.
	misses := 0
	for _, ws := range ranOn {
		misses += len(ws)
	}
	hits := len(runs) - misses

	workersAfter := p.workerMetrics()
	delta := func(name string, want map[string]string) float64 {
		return sum(name, want, workersAfter...) - sum(name, want, workersBefore...)
	}
	t.Run("worker counters", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			labels map[string]string
			want   float64
		}{
			{"wasmwiz_executions_total", labels("status", "ok"), 3},
			{"wasmwiz_executions_total", labels("status", "trap"), 1},
			{"wasmwiz_executions_total", labels("status", "timeout"), 1},
			{"wasmwiz_executions_total", labels("status", "exit"), 0},
			{"wasmwiz_executions_total", labels("status", "memory_limit"), 0},
			{"wasmwiz_executions_total", nil, 5},
			{"wasmwiz_execution_failures_total", nil, 0},
			{"wasmwiz_execution_duration_seconds", nil, 5},
			{"wasmwiz_execution_queue_seconds", nil, 5},
			{"wasmwiz_execution_memory_peak_bytes", nil, 5},
			{"wasmwiz_module_cache_misses_total", nil, float64(misses)},
			{"wasmwiz_module_cache_hits_total", nil, float64(hits)},
			{"wasmwiz_module_cache_compiles_total", nil, float64(misses)},
			{"wasmwiz_module_compile_seconds", nil, float64(misses)},
			{"wasmwiz_module_cache_entries", nil, float64(misses)},
			{"wasmwiz_module_cache_evictions_total", nil, 0},
		} {
			if got := delta(tt.name, tt.labels); got != tt.want {
				t.Errorf("%s%v moved by %v over both workers; want %v (runs by worker: %v)", tt.name, tt.labels, got, tt.want, ranOn)
			}
		}
		if got := sum("wasmwiz_module_cache_bytes", nil, workersAfter...); got <= 0 {
			t.Errorf("wasmwiz_module_cache_bytes = %v with modules cached; want positive", got)
		}
		if got := sum("wasmwiz_worker_concurrency", nil, workersAfter...); got != 4 {
			t.Errorf("wasmwiz_worker_concurrency over both workers = %v; want 4 (2 × WORKER_CONCURRENCY 2)", got)
		}
		// A slot is freed just after the reply leaves.
		testenv.Eventually(t, 5*time.Second, "wasmwiz_worker_executions_in_flight back to 0", func() bool {
			return sum("wasmwiz_worker_executions_in_flight", nil, p.workerMetrics()...) == 0
		})
	})

	t.Run("cache hit after a miss", func(t *testing.T) {
		// One module twice: each worker that runs it misses once, then hits.
		echo := p.upload("echo", testdata.Module("echo"))
		before := p.workerMetrics()
		on := map[string]bool{}
		for range 2 {
			resp, res := p.execute(map[string]any{"module_id": echo, "input": "again"})
			if resp.status != 200 || res.Status != "ok" {
				t.Fatalf("execute(echo) = %d %s; want 200 ok", resp.status, short(resp.body))
			}
			on[res.Worker] = true
		}
		after := p.workerMetrics()
		for name, want := range map[string]int{
			"wasmwiz_module_cache_misses_total": len(on), "wasmwiz_module_cache_hits_total": 2 - len(on),
		} {
			if got := sum(name, nil, after...) - sum(name, nil, before...); got != float64(want) {
				t.Errorf("%s moved by %v for one module run twice on %d worker(s); want %d", name, got, len(on), want)
			}
		}
	})

	t.Run("api requests by route pattern", func(t *testing.T) {
		// The api counts a request once its answer is written, which the
		// client may see first.
		want := []struct {
			labels map[string]string
			n      float64
		}{
			{labels("route", "/api/wasm/upload", "method", "POST", "status", "201"), 4},
			{labels("route", "/api/wasm/execute", "method", "POST", "status", "200"), 7},
		}
		var after metrics
		testenv.Eventually(t, 5*time.Second, "the api's request counters", func() bool {
			after = p.scrape(p.url)
			for _, w := range want {
				if sum("wasmwiz_http_requests_total", w.labels, after)-sum("wasmwiz_http_requests_total", w.labels, apiBefore) < w.n {
					return false
				}
			}
			return true
		})
		for _, w := range want {
			if got := sum("wasmwiz_http_requests_total", w.labels, after) - sum("wasmwiz_http_requests_total", w.labels, apiBefore); got != w.n {
				t.Errorf("wasmwiz_http_requests_total%v moved by %v; want %v", w.labels, got, w.n)
			}
			dl := labels("route", w.labels["route"], "method", "POST")
			if got := sum("wasmwiz_http_request_duration_seconds", dl, after) - sum("wasmwiz_http_request_duration_seconds", dl, apiBefore); got != w.n {
				t.Errorf("wasmwiz_http_request_duration_seconds%v moved by %v; want %v", dl, got, w.n)
			}
		}
		for _, mf := range after {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "route" && strings.Count(l.GetValue(), "-") >= 4 {
						t.Errorf("%s has route %q: a raw path, not a route pattern", mf.GetName(), l.GetValue())
					}
				}
			}
		}
	})

	t.Run("dashboard queries exported metrics", func(t *testing.T) {
		exported := sampleNames(append(p.workerMetrics(), p.scrape(p.url))...)
		queried := dashboardMetrics(t)
		if len(queried) < 20 {
			t.Fatalf("dashboard queries %d metrics (%v); want the platform's, at least 20", len(queried), queried)
		}
		for _, name := range queried {
			if !exported[name] {
				t.Errorf("dashboard queries %s, which neither the api nor a worker exports", name)
			}
		}
		for _, must := range []string{"wasmwiz_http_requests_total", "wasmwiz_executions_total", "wasmwiz_module_cache_hits_total",
			"wasmwiz_nats_no_responders_total", "wasmwiz_ratelimit_decisions_total"} {
			if !slices.Contains(queried, must) {
				t.Errorf("dashboard does not query %s", must)
			}
		}
	})

	t.Run("no responders", func(t *testing.T) {
		for _, w := range p.workers {
			w.stop(syscall.SIGTERM)
		}
		p.waitWorkers(0)
		before := p.scrape(p.url)
		if r, _ := p.execute(map[string]any{"module_id": ids["hello"]}); r.status != 503 {
			t.Fatalf("execute with no worker = %d %s; want 503", r.status, short(r.body))
		}
		after := p.scrape(p.url)
		for name, want := range map[string]float64{"wasmwiz_nats_no_responders_total": 1, "wasmwiz_nats_timeouts_total": 0} {
			if got := sum(name, nil, after) - sum(name, nil, before); got != want {
				t.Errorf("%s moved by %v after one execution with no worker; want %v", name, got, want)
			}
		}
	})
}

// dashboardMetrics returns the metric names the dashboard's queries use,
// sorted and unique.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatalf("read the dashboard: %v", err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	if dash.UID == "" {
		t.Errorf("the dashboard has no uid, so provisioning would duplicate it")
	}
	seen := map[string]bool{}
	for _, panel := range dash.Panels {
		if panel.Type == "row" {
			continue
		}
		if len(panel.Targets) == 0 {
			t.Errorf("panel %q has no query", panel.Title)
		}
		for _, tg := range panel.Targets {
			names := promqlMetrics(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q names no metric", panel.Title, tg.Expr)
			}
			for _, n := range names {
				seen[n] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

var (
	promqlSkip = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\{[^}]*\}|\[[^\]]*\]|\$\{?\w+\}?`)
	promqlWord = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	// An aggregation's clause may come between it and its parenthesis.
	promqlAggregationClause = regexp.MustCompile(`^(?i:by|without)\s*\(`)
	// Words that group labels: what follows them in parentheses are labels.
	promqlGrouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
	promqlKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true}
)

// promqlMetrics picks the metric names out of a PromQL query: the words
// that are not inside strings, label matchers or ranges, not functions or
// aggregations (followed by "("), not keywords, and not the labels of a
// by/without/on/ignoring clause.
func promqlMetrics(expr string) []string {
	// Matchers, ranges, strings and Grafana variables are blanked, keeping
	// positions so that "(" can still be looked for after a word.
	clean := promqlSkip.ReplaceAllStringFunc(expr, func(s string) string { return strings.Repeat(" ", len(s)) })
	var out []string
	labelsUntil := -1 // end of a by/without/on/ignoring clause's label list
	for _, loc := range promqlWord.FindAllStringIndex(clean, -1) {
		word := clean[loc[0]:loc[1]]
		rest := strings.TrimLeft(clean[loc[1]:], " ")
		switch {
		case loc[0] < labelsUntil:
			// a label of a grouping clause
		case promqlGrouping[strings.ToLower(word)]:
			if open := strings.IndexByte(clean[loc[1]:], '('); open >= 0 {
				if end := strings.IndexByte(clean[loc[1]+open:], ')'); end >= 0 {
					labelsUntil = loc[1] + open + end
				}
			}
		case promqlKeywords[strings.ToLower(word)]:
		case strings.HasPrefix(rest, "("), promqlAggregationClause.MatchString(rest):
			// a function or an aggregation ("sum by (le) (...)")
		case loc[0] > 0 && (clean[loc[0]-1] >= '0' && clean[loc[0]-1] <= '9' || clean[loc[0]-1] == '.'):
			// the exponent or unit of a number (1e3, 5m)
		default:
			out = append(out, word)
		}
	}
	return out
}

func TestPromQLMetrics(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`sum(rate(wasmwiz_http_requests_total[$__rate_interval]))`, []string{"wasmwiz_http_requests_total"}},
		{`sum by (route, method) (rate(wasmwiz_http_requests_total{status=~"5.."}[5m])) / sum(rate(wasmwiz_http_requests_total[5m]))`,
			[]string{"wasmwiz_http_requests_total", "wasmwiz_http_requests_total"}},
		{`histogram_quantile(0.95, sum by (le) (rate(wasmwiz_execution_duration_seconds_bucket[$__rate_interval])))`,
			[]string{"wasmwiz_execution_duration_seconds_bucket"}},
		{`sum(wasmwiz_worker_executions_in_flight) / sum(wasmwiz_worker_concurrency)`,
			[]string{"wasmwiz_worker_executions_in_flight", "wasmwiz_worker_concurrency"}},
		{`go_goroutines{job=~"$job"} and on(instance) up`, []string{"go_goroutines", "up"}},
		{`max without (instance) (process_open_fds) > 1e3`, []string{"process_open_fds"}},
		{`rate(go_gc_duration_seconds_sum[${interval}]) / rate(go_gc_duration_seconds_count[1m] offset 5m)`,
			[]string{"go_gc_duration_seconds_sum", "go_gc_duration_seconds_count"}},
	}
	for _, tt := range tests {
		if got := promqlMetrics(tt.expr); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("promqlMetrics(%q) = %v; want %v", tt.expr, got, tt.want)
		}
	}
}
