package ratelimit

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	kindRequest   = "request"
	kindExecution = "execution"
)

type metrics struct {
	decisions *prometheus.CounterVec
	// byKind holds the eight series, resolved once: [execution][limited][local].
	byKind    [2][2][2]prometheus.Counter
	redisUp   prometheus.Gauge
	fallbacks prometheus.Counter
	// Leases (see the package comment).
	leaseExecutes prometheus.Counter
	leaseReturned prometheus.Counter
	leaseLost     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasmwiz_ratelimit_decisions_total",
			Help: "Rate-limit decisions by kind (request, execution), result (allowed, limited) and backend (redis, local).",
		}, []string{"kind", "result", "backend"}),
		redisUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wasmwiz_ratelimit_redis_up",
			Help: "1 while the rate limiter reaches Redis, 0 while it limits locally.",
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wasmwiz_ratelimit_fallback_total",
			Help: "Redis outages begun: times the rate limiter fell back to local limits.",
		}),
		leaseExecutes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wasmwiz_ratelimit_lease_executes_total",
			Help: "Execute requests answered from a lease of units prepaid in Redis, without a Redis call (also counted in decisions_total, backend redis).",
		}),
		leaseReturned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wasmwiz_ratelimit_lease_returned_total",
			Help: "Leased execute units given back to Redis unspent.",
		}),
		leaseLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wasmwiz_ratelimit_lease_lost_total",
			Help: "Leased execute units neither spent nor given back (Redis unreachable): counted in Redis but never admitted.",
		}),
	}
	if reg != nil {
		m.decisions = register(reg, m.decisions)
		m.redisUp = register(reg, m.redisUp)
		m.fallbacks = register(reg, m.fallbacks)
		m.leaseExecutes = register(reg, m.leaseExecutes)
		m.leaseReturned = register(reg, m.leaseReturned)
		m.leaseLost = register(reg, m.leaseLost)
	}
	// Resolving every series up front also shows dashboards zeros, not gaps.
	for i, kind := range []string{kindRequest, kindExecution} {
		for j, result := range []string{"allowed", "limited"} {
			for k, backend := range []string{"redis", "local"} {
				m.byKind[i][j][k] = m.decisions.WithLabelValues(kind, result, backend)
			}
		}
	}
	return m
}

// register registers c on reg, or returns the collector already registered
// under the same description, so two Limiters may share a registry.
// Any other failure is a programming error.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
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
	panic("ratelimit: register metrics: " + err.Error())
}

func (m *metrics) count(kind string, allowed, local bool) {
	m.byKind[b2i(kind == kindExecution)][b2i(!allowed)][b2i(local)].Inc()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
