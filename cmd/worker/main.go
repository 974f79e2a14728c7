// Command worker runs WebAssembly modules for the api: it takes execution
// requests from NATS, loads module bytes from PostgreSQL once per module,
// runs them with wazero and replies. main only wires.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wasmwiz/wasmwiz/internal/config"
	"github.com/wasmwiz/wasmwiz/internal/runner"
	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/telemetry"
	"github.com/wasmwiz/wasmwiz/internal/worker"
)

// version is set at build time: -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  worker              serve executions from NATS until SIGTERM, then drain
  worker version      print the version
Configuration is read from the environment; see README.md.`

// drainGrace is added to EXECUTION_TIMEOUT (the longest a module may run
// here) to bound the drain on SIGTERM: replies, held messages, spills.
// Kubernetes' terminationGracePeriodSeconds must exceed the sum.
const drainGrace = 15 * time.Second

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			fmt.Fprintln(stdout, version)
			return nil
		case "help", "-h", "--help":
			fmt.Fprintln(stdout, usage)
			return nil
		}
		return fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}

	// Configuration and logging.
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	// Lines go out from a goroutine of their own, off the request path;
	// Close writes the last ones before run returns.
	logOut := telemetry.NewLogWriter(stderr)
	defer logOut.Close()
	log := telemetry.NewLogger(logOut, cfg.LogLevel, "worker")
	log.InfoContext(ctx, "starting", "version", version, "config", cfg)

	// PostgreSQL: module bytes, read on compile-cache misses only.
	db, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer db.Close()

	// NATS. The worker starts without it and reconnects for ever, with a
	// capped, jittered backoff so that a fleet does not reconnect in step.
	nc, err := nats.Connect(cfg.NATSURL,
		nats.Name("wasmwiz-worker-"+cfg.WorkerID),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "error", err)
			}
		}),
		// The first connection may come late (RetryOnFailedConnect).
		nats.ConnectHandler(func(c *nats.Conn) { log.Info("nats connected", "server", c.ConnectedUrlRedacted()) }),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "server", c.ConnectedUrlRedacted()) }),
	)
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	// Close flushes what is buffered: the last replies of the drain.
	defer nc.Close()

	// Metrics, served with the worker's health on METRICS_PORT below.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := telemetry.NewWorkerMetrics(reg)

	// wazero.
	rn, err := runner.New(ctx, runner.Config{
		CacheBytes:          cfg.ModuleCacheBytes,
		CompilationCacheDir: cfg.CompilationCacheDir,
		MaxMemoryLimitBytes: uint64(cfg.MemoryLimit),
		OnCompile:           metrics.Compiled,
	})
	if err != nil {
		return err
	}
	defer rn.Close(context.Background())

	// The worker.
	w, err := worker.New(nc, rn, db, log, worker.Config{
		Prefix:         cfg.NATSSubjectPrefix,
		ID:             cfg.WorkerID,
		Concurrency:    cfg.WorkerConcurrency,
		MaxTimeout:     cfg.ExecutionTimeout,
		MaxMemoryBytes: uint64(cfg.MemoryLimit),
		MaxOutputBytes: cfg.MaxOutputSize,
		MaxStdinBytes:  cfg.MaxInputSize,
		IsNotFound:     func(err error) bool { return errors.Is(err, store.ErrNotFound) },
		Observer:       metrics,
	})
	if err != nil {
		return err
	}
	reg.MustRegister(telemetry.NewModuleCacheCollector(rn.CacheStats, cfg.ModuleCacheBytes))
	telemetry.RegisterWorkerSlots(reg, w.InFlight, cfg.WorkerConcurrency)

	// Metrics and health, on their own port.
	srv := &http.Server{
		Addr:              ":" + strconv.Itoa(cfg.MetricsPort),
		Handler:           metricsHandler(reg, w),
		ReadHeaderTimeout: 5 * time.Second,
	}
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", srv.Addr, err)
	}
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ln) }()
	defer srv.Close()
	log.InfoContext(ctx, "metrics listening", "addr", ln.Addr().String())
	if cfg.PprofAddr != "" {
		stopPprof, err := telemetry.ServePprof(cfg.PprofAddr, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	// Serve until SIGTERM.
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(context.Background()) }()
	select {
	case err := <-runErr:
		return err
	case err := <-srvErr:
		err = fmt.Errorf("metrics server: %w", err)
		_ = w.Shutdown(context.Background())
		<-runErr
		return err
	case <-ctx.Done():
	}

	// Drain: stop taking work, let running executions reply, then close
	// (deferred) the runner, NATS and the pool, in reverse order of start.
	log.Info("draining")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ExecutionTimeout+drainGrace)
	defer cancel()
	if err := w.Shutdown(sctx); err != nil {
		log.Warn("drain cut short; running executions were cancelled", "error", err)
	}
	if err := <-runErr; err != nil {
		log.Error("worker", "error", err)
	}
	hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer hcancel()
	_ = srv.Shutdown(hctx)
	log.Info("stopped")
	return nil
}

// reconnectDelay doubles from 250 ms to 8 s, with up to 25% jitter.
func reconnectDelay(attempts int) time.Duration {
	d := 250 * time.Millisecond << min(max(attempts-1, 0), 5)
	return d + rand.N(d/4+1)
}

// metricsHandler serves /metrics from reg and the worker's health:
// /health/live while the process serves, /health/ready while it takes work.
func metricsHandler(reg *prometheus.Registry, w *worker.Worker) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /health/live", func(rw http.ResponseWriter, _ *http.Request) {
		writeJSON(rw, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /health/ready", func(rw http.ResponseWriter, _ *http.Request) {
		if !w.Accepting() {
			writeJSON(rw, http.StatusServiceUnavailable, map[string]string{"status": "not_ready"})
			return
		}
		writeJSON(rw, http.StatusOK, map[string]string{"status": "ready"})
	})
	return mux
}

func writeJSON(rw http.ResponseWriter, status int, v any) {
	rw.Header().Set("Content-Type", "application/json; charset=utf-8")
	rw.WriteHeader(status)
	_ = json.NewEncoder(rw).Encode(v)
}
