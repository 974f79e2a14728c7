package telemetry

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmwiz/wasmwiz/internal/runner"
)

// Every metric the api and the worker export is defined in this file, each
// on the Registerer its constructor is given (never the global registry), so
// that an operator or a dashboard author finds them all in one place. The
// rate limiter's wasmwiz_ratelimit_* metrics live with it, in ratelimit.
//
// Labels are bounded: route patterns, never paths; statuses and codes from
// fixed sets; never an id.

// Histogram buckets, in seconds or bytes.
var (
	// httpBuckets reach past the longest execution a tier allows (30 s) plus
	// the api's grace.
	httpBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 40, 60}
	// runBuckets cover a sub-millisecond hello to a 30 s timeout.
	runBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	// queueBuckets: a free slot and a cached module take well under a
	// millisecond; a miss adds a database fetch and a compilation.
	queueBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	// compileBuckets: a tiny module compiles in about a millisecond, a Go
	// program of a few MB in seconds.
	compileBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	// memoryBuckets are powers of four from one 64 KiB page to 4 GiB.
	memoryBuckets = prometheus.ExponentialBuckets(64<<10, 4, 9)
)

// ExecutionStatuses are the statuses of API.md's execution answer; the
// executions counter has a series for each from the start, so that
// dashboards show zeros rather than gaps.
var ExecutionStatuses = []string{"ok", "exit", "trap", "timeout", "memory_limit"}

// FailureCodes are the worker's own failures (protocol.Failure codes).
var FailureCodes = []string{"module_not_found", "invalid_module", "internal"}

// APIMetrics are the api's: HTTP requests and the wait for workers.
type APIMetrics struct {
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	inFlight     prometheus.Gauge
	noResponders prometheus.Counter
	timeouts     prometheus.Counter
}

// NewAPIMetrics registers the api's metrics on reg; a nil reg keeps them
// unregistered (they still count). Registering twice on one registry
// shares the first set.
func NewAPIMetrics(reg prometheus.Registerer) *APIMetrics {
	return &APIMetrics{
		requests: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmwiz_http_requests_total",
			Help: "HTTP requests answered, by route pattern (\"unmatched\" for no route), method and status code.",
		}, []string{"route", "method", "status"})),
		duration: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wasmwiz_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route pattern and method; executions include the module's run.",
			Buckets: httpBuckets,
		}, []string{"route", "method"})),
		inFlight: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wasmwiz_http_requests_in_flight",
			Help: "HTTP requests being answered now.",
		})),
		noResponders: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wasmwiz_nats_no_responders_total",
			Help: "Executions NATS refused at once because no worker was subscribed (503 no_workers).",
		})),
		timeouts: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wasmwiz_nats_timeouts_total",
			Help: "Executions whose worker did not reply within the time limit plus the grace (504 worker_timeout).",
		})),
	}
}

// RequestStarted counts a request in flight until RequestEnded.
func (m *APIMetrics) RequestStarted() { m.inFlight.Inc() }

// RequestEnded is RequestStarted's pair, called even when a handler panics.
func (m *APIMetrics) RequestEnded() { m.inFlight.Dec() }

// Observe records an answered request. route must be a route pattern or
// "unmatched", method one of the standard methods or "other".
func (m *APIMetrics) Observe(route, method string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route, method).Observe(d.Seconds())
}

// NoResponders counts an execution nobody was subscribed to take.
func (m *APIMetrics) NoResponders() { m.noResponders.Inc() }

// Timeout counts an execution whose reply never came in time.
func (m *APIMetrics) Timeout() { m.timeouts.Inc() }

// WorkerMetrics are a worker's: executions, their costs, compilations and
// the forwarding of busy workers. Its methods are safe for concurrent use.
type WorkerMetrics struct {
	executions map[string]prometheus.Counter // by status
	other      prometheus.Counter            // a status this file does not know
	failures   map[string]prometheus.Counter // by failure code
	duration   prometheus.Histogram
	memoryPeak prometheus.Histogram
	queue      prometheus.Histogram
	compile    prometheus.Histogram
	forwards   prometheus.Counter
}

// NewWorkerMetrics registers a worker's metrics on reg (nil: unregistered).
func NewWorkerMetrics(reg prometheus.Registerer) *WorkerMetrics {
	executions := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wasmwiz_executions_total",
		Help: "Executions run to an answer, by status (ok, exit, trap, timeout, memory_limit).",
	}, []string{"status"}))
	failures := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wasmwiz_execution_failures_total",
		Help: "Execution requests the worker could not run, by code (module_not_found, invalid_module, internal).",
	}, []string{"code"}))
	m := &WorkerMetrics{
		executions: map[string]prometheus.Counter{},
		other:      executions.WithLabelValues("other"),
		failures:   map[string]prometheus.Counter{},
		duration: register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wasmwiz_execution_duration_seconds",
			Help:    "Time modules ran, from start to end, whatever their status.",
			Buckets: runBuckets,
		})),
		memoryPeak: register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wasmwiz_execution_memory_peak_bytes",
			Help:    "Largest linear memory of each execution.",
			Buckets: memoryBuckets,
		})),
		queue: register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wasmwiz_execution_queue_seconds",
			Help:    "Time from the worker receiving a request to the module starting: a slot, the stdin, and on a cache miss the fetch and compilation.",
			Buckets: queueBuckets,
		})),
		compile: register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wasmwiz_module_compile_seconds",
			Help:    "Time to compile a module on a compiled-module cache miss (from wazero's disk cache when it has it).",
			Buckets: compileBuckets,
		})),
		forwards: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wasmwiz_worker_forwards_total",
			Help: "Execution requests passed on to the queue group because every slot of this worker was taken.",
		})),
	}
	for _, s := range ExecutionStatuses {
		m.executions[s] = executions.WithLabelValues(s)
	}
	for _, c := range FailureCodes {
		m.failures[c] = failures.WithLabelValues(c)
	}
	return m
}

// Executed records an execution that ran, whatever the module did.
func (m *WorkerMetrics) Executed(status string, duration, queue time.Duration, memoryPeakBytes uint64) {
	c, ok := m.executions[status]
	if !ok {
		c = m.other
	}
	c.Inc()
	m.duration.Observe(duration.Seconds())
	m.queue.Observe(queue.Seconds())
	m.memoryPeak.Observe(float64(memoryPeakBytes))
}

// Failed records a request the worker could not run.
func (m *WorkerMetrics) Failed(code string) {
	c, ok := m.failures[code]
	if !ok {
		c = m.failures["internal"]
	}
	c.Inc()
}

// Forwarded records a request passed on because all slots were taken.
func (m *WorkerMetrics) Forwarded() { m.forwards.Inc() }

// Compiled records one compilation; it is runner.Config.OnCompile.
func (m *WorkerMetrics) Compiled(d time.Duration) { m.compile.Observe(d.Seconds()) }

// RegisterWorkerSlots registers the gauges of a worker's capacity: the
// executions holding a slot now (inFlight) and the slots there are.
func RegisterWorkerSlots(reg prometheus.Registerer, inFlight func() int, concurrency int) {
	register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "wasmwiz_worker_executions_in_flight",
		Help: "Executions holding one of this worker's slots.",
	}, func() float64 { return float64(inFlight()) }))
	register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "wasmwiz_worker_concurrency",
		Help: "Executions this worker runs at once (WORKER_CONCURRENCY).",
	}, func() float64 { return float64(concurrency) }))
}

// moduleCacheCollector reads the compiled-module cache's counters at each
// scrape, so that runner stays free of Prometheus and nothing is counted
// twice.
type moduleCacheCollector struct {
	stats    func() runner.CacheStats
	capacity float64

	hits, misses, compiles, evictions, bytes, entries, capBytes *prometheus.Desc
}

// NewModuleCacheCollector returns a collector of the compiled-module cache
// (stats is (*runner.Runner).CacheStats; capacity MODULE_CACHE_BYTES).
func NewModuleCacheCollector(stats func() runner.CacheStats, capacityBytes int64) prometheus.Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("wasmwiz_module_cache_"+name, help, nil, nil)
	}
	return &moduleCacheCollector{
		stats:     stats,
		capacity:  float64(capacityBytes),
		hits:      d("hits_total", "Executions that found their module compiled in the cache."),
		misses:    d("misses_total", "Executions that had to wait for their module to be compiled (concurrent misses share one compilation)."),
		compiles:  d("compiles_total", "Modules compiled into the cache."),
		evictions: d("evictions_total", "Compiled modules dropped to stay within MODULE_CACHE_BYTES."),
		bytes:     d("bytes", "Estimated size of the compiled modules in the cache."),
		entries:   d("entries", "Compiled modules in the cache."),
		capBytes:  d("capacity_bytes", "The cache's bound, MODULE_CACHE_BYTES."),
	}
}

func (c *moduleCacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.hits, c.misses, c.compiles, c.evictions, c.bytes, c.entries, c.capBytes} {
		ch <- d
	}
}

func (c *moduleCacheCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(s.Hits))
	ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(s.Misses))
	ch <- prometheus.MustNewConstMetric(c.compiles, prometheus.CounterValue, float64(s.Compiles))
	ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(s.Evictions))
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(s.Bytes))
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(s.Entries))
	ch <- prometheus.MustNewConstMetric(c.capBytes, prometheus.GaugeValue, c.capacity)
}

// register registers c on reg, or returns the collector already registered
// under the same description, so that two servers built on one registry
// (as tests do) share their metrics. A nil reg leaves c unregistered. Any
// other failure is a programming error.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic("telemetry: register metrics: " + err.Error())
}
