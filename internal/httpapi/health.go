package httpapi

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// HealthChecks are the probes of the services the api depends on. A nil
// probe is reported as not configured.
type HealthChecks struct {
	Database func(ctx context.Context) error
	NATS     func(ctx context.Context) error
	Redis    func(ctx context.Context) error
	Workers  func(ctx context.Context) (int, error)
}

const checkTimeout = 2 * time.Second

type checkJSON struct {
	Status    string  `json:"status"`
	LatencyMS float64 `json:"latency_ms"`
	Error     string  `json:"error,omitempty"`
	Count     *int    `json:"count,omitempty"`
}

type healthJSON struct {
	Status        string               `json:"status"`
	Version       string               `json:"version,omitempty"`
	UptimeSeconds float64              `json:"uptime_seconds,omitempty"`
	Checks        map[string]checkJSON `json:"checks,omitempty"`
}

func (s *Server) live(c echo.Context) error {
	return c.JSON(http.StatusOK, healthJSON{Status: "ok"})
}

// ready answers Kubernetes readiness: the api can serve only with
// PostgreSQL and NATS. Redis is not needed (limits fall back to local).
func (s *Server) ready(c echo.Context) error {
	checks := s.runChecks(c.Request().Context(), false)
	if s.draining.Load() {
		// Out of the load balancer before the listener closes: see
		// StartDraining.
		checks["shutdown"] = checkJSON{Status: "error", Error: "the api is shutting down"}
		return c.JSON(http.StatusServiceUnavailable, healthJSON{Status: "not_ready", Checks: checks})
	}
	for _, name := range []string{"database", "nats"} {
		if checks[name].Status != "ok" {
			return c.JSON(http.StatusServiceUnavailable, healthJSON{Status: "not_ready", Checks: checks})
		}
	}
	return c.JSON(http.StatusOK, healthJSON{Status: "ready"})
}

// health reports every dependency: down without PostgreSQL or NATS,
// degraded without Redis or without any worker.
func (s *Server) health(c echo.Context) error {
	checks := s.runChecks(c.Request().Context(), true)
	status, code := "ok", http.StatusOK
	for _, name := range []string{"redis", "workers"} {
		if checks[name].Status != "ok" {
			status = "degraded"
		}
	}
	for _, name := range []string{"database", "nats"} {
		if checks[name].Status != "ok" {
			status, code = "down", http.StatusServiceUnavailable
		}
	}
	return c.JSON(code, healthJSON{
		Status: status, Version: s.version, UptimeSeconds: time.Since(s.started).Seconds(), Checks: checks,
	})
}

// runChecks probes the dependencies at once, each under its own timeout.
func (s *Server) runChecks(ctx context.Context, all bool) map[string]checkJSON {
	type probe struct {
		name string
		fn   func(context.Context) (*int, error)
	}
	plain := func(f func(context.Context) error) func(context.Context) (*int, error) {
		if f == nil {
			return nil
		}
		return func(ctx context.Context) (*int, error) { return nil, f(ctx) }
	}
	probes := []probe{{"database", plain(s.checks.Database)}, {"nats", plain(s.checks.NATS)}}
	if all {
		probes = append(probes, probe{"redis", plain(s.checks.Redis)})
		var workers func(context.Context) (*int, error)
		if s.checks.Workers != nil {
			workers = func(ctx context.Context) (*int, error) {
				n, err := s.checks.Workers(ctx)
				if err == nil && n == 0 {
					return &n, errNoWorkers
				}
				return &n, err
			}
		}
		probes = append(probes, probe{"workers", workers})
	}

	out := make(map[string]checkJSON, len(probes))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range probes {
		wg.Go(func() {
			res := checkJSON{Status: "ok"}
			if p.fn == nil {
				res = checkJSON{Status: "unconfigured"}
			} else {
				ctx, cancel := context.WithTimeout(ctx, checkTimeout)
				start := time.Now()
				count, err := p.fn(ctx)
				cancel()
				res.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
				res.Count = count
				if err != nil {
					res.Status, res.Error = "error", checkMessage(p.name, err)
				}
			}
			mu.Lock()
			out[p.name] = res
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

type healthError string

func (e healthError) Error() string { return string(e) }

const errNoWorkers = healthError("no worker is subscribed")

// checkMessage says what failed without echoing driver errors, which can
// carry addresses and user names.
func checkMessage(name string, err error) string {
	var he healthError
	if errors.As(err, &he) {
		return string(he)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return name + " did not answer within " + checkTimeout.String()
	}
	return name + " is unreachable"
}
