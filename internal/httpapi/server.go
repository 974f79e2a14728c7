// Package httpapi is the api's HTTP edge: Echo routes, handlers,
// middleware and the one mapping of errors to the contract of API.md.
// Handlers stay thin and Echo stays here, so that moving to Echo v5 touches
// this package only.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/config"
	"github.com/wasmwiz/wasmwiz/internal/runner"
	"github.com/wasmwiz/wasmwiz/internal/store"
)

// ModuleValidator checks a module at upload; the api never runs guest code.
type ModuleValidator interface {
	Validate(ctx context.Context, wasm []byte) (runner.ModuleInfo, error)
}

// Deps are everything the HTTP layer needs, built by main.
type Deps struct {
	Config    config.Config
	Logger    *slog.Logger
	Store     *store.Store
	Validator ModuleValidator
	Executor  Executor
	Keys      *auth.Service
	// OnModuleDeleted, when set, tells the other replicas to forget a
	// deleted module (they call EvictModule).
	OnModuleDeleted func(id uuid.UUID)
	// Limiter, when set, applies the rate limits and quotas.
	Limiter RateLimiter
	Checks  HealthChecks
	// Metrics, when set, is served at /metrics.
	Metrics *prometheus.Registry
	// Usage, when set, receives a usage record per execution sent to a
	// worker.
	Usage UsageRecorder
	// Audit, when set, receives the security-relevant events.
	Audit   Auditor
	Version string
}

// Server is the api's HTTP handler.
type Server struct {
	cfg       config.Config
	log       *slog.Logger
	store     *store.Store
	validator ModuleValidator
	exec      Executor
	keys      *auth.Service
	limiter   RateLimiter
	modules   *moduleCache

	onModuleDeleted func(uuid.UUID)
	checks          HealthChecks
	metrics         *prometheus.Registry
	usage           UsageRecorder
	auditor         Auditor
	version         string
	started         time.Time
	echo            *echo.Echo
	draining        atomic.Bool
}

// StartDraining begins a graceful shutdown while the listener still
// accepts: readiness answers 503 so that the load balancer (a Kubernetes
// Service) stops sending new connections, and every response carries
// Connection: close so that keep-alive clients move to other replicas.
// The caller waits SHUTDOWN_DELAY, then shuts the HTTP server down.
func (s *Server) StartDraining() { s.draining.Store(true) }

// New builds the server and its routes.
func New(d Deps) *Server {
	s := &Server{
		cfg: d.Config, log: d.Logger, store: d.Store, validator: d.Validator, exec: d.Executor,
		keys: d.Keys, limiter: d.Limiter, modules: newModuleCache(), onModuleDeleted: d.OnModuleDeleted, checks: d.Checks, metrics: d.Metrics, version: d.Version, started: time.Now(),
		usage: d.Usage, auditor: d.Audit,
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	// The client address (audit, logs) comes from X-Forwarded-For only when
	// the hop that set it is a loopback, link-local or private address: an
	// ingress in the cluster, never a client on the internet forging it.
	e.IPExtractor = echo.ExtractIPFromXFFHeader()
	e.Logger.SetOutput(discard{})
	s.echo = e
	s.routes()
	return s
}

// ServeHTTP lets the server be an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// HTTPServer returns a net/http server with timeouts that bound slow
// clients. The write timeout leaves room for the longest execution a tier
// allows plus the grace for the worker's reply.
func (s *Server) HTTPServer() *http.Server {
	longest := max(s.cfg.MaxTimeFree, s.cfg.MaxTimeBasic, s.cfg.MaxTimePro, s.cfg.ExecutionTimeout)
	return &http.Server{
		Addr:              s.cfg.ListenAddr(),
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		WriteTimeout:      longest + ExecuteGrace + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
