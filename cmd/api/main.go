// Command api is WasmWiz's HTTP front: it authenticates callers, stores
// modules and sends executions to the worker fleet. main only wires.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/config"
	"github.com/wasmwiz/wasmwiz/internal/httpapi"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/ratelimit"
	"github.com/wasmwiz/wasmwiz/internal/runner"
	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/telemetry"
	// Aliased: usage is the command line's help text here.
	usagerec "github.com/wasmwiz/wasmwiz/internal/usage"
)

// version is set at build time: -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  api                 serve the HTTP API (in development, also create and migrate the database)
  api migrate         apply the database migrations and exit
  api keys create --name NAME --role admin|user --tier free|basic|pro [--owner OWNER] [--expires-in-days N]
                      create an API key and print it once (the first admin key of an install)
  api version         print the version
Configuration is read from the environment; see README.md.`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := ""
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "version":
		fmt.Fprintln(stdout, version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	// Lines go out from a goroutine of their own, off the request path;
	// Close writes the last ones before run returns.
	logOut := telemetry.NewLogWriter(stderr)
	defer logOut.Close()
	log := telemetry.NewLogger(logOut, cfg.LogLevel, "api")
	if cmd != "migrate" {
		if err := cfg.RequireSecrets(); err != nil {
			return err
		}
	}
	switch cmd {
	case "", "serve":
		return serve(ctx, cfg, log)
	case "migrate":
		return migrate(ctx, cfg, log, args)
	case "keys":
		return keysCommand(ctx, cfg, args, stdout, stderr)
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

func migrate(ctx context.Context, cfg config.Config, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	create := fs.Bool("create-database", cfg.IsDevelopment(), "create the database if it does not exist")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *create {
		if err := store.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
			return err
		}
	}
	n, err := store.Migrate(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	log.InfoContext(ctx, "migrations applied", "applied", n)
	return nil
}

// shutdownTimeout bounds the wait for in-flight requests on SIGTERM; it
// covers the longest execution any tier allows.
func shutdownTimeout(cfg config.Config) time.Duration {
	return max(cfg.MaxTimeFree, cfg.MaxTimeBasic, cfg.MaxTimePro, cfg.ExecutionTimeout) + httpapi.ExecuteGrace + 5*time.Second
}

// recorderFlushTimeout bounds the wait for the last usage records and
// audit events at shutdown, PostgreSQL retries included.
const recorderFlushTimeout = 15 * time.Second

func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	log.InfoContext(ctx, "starting", "version", version, "config", cfg)

	// PostgreSQL. Development creates and migrates its database, so that
	// the platform runs on a fresh machine with no step before it.
	if cfg.IsDevelopment() {
		if err := migrate(ctx, cfg, log, nil); err != nil {
			return err
		}
	}
	db, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer db.Close()

	// Keys. A revocation is broadcast over NATS so that every replica
	// forgets the key at once; while the broadcast may be missed (NATS
	// down), the key cache trusts its entries for seconds only.
	revoked := cfg.NATSSubjectPrefix + ".keys.revoked.v1"
	moduleDeleted := cfg.NATSSubjectPrefix + ".modules.deleted.v1"
	var nc *nats.Conn
	keys := auth.NewService(db, auth.Options{
		Salt: []byte(cfg.APISalt), JWTSecret: []byte(cfg.JWTSecret), JWTTTL: cfg.JWTTTL,
		Development: cfg.IsDevelopment(),
		OnRevoke: func(id uuid.UUID) {
			if err := nc.Publish(revoked, []byte(id.String())); err != nil {
				log.Warn("broadcast key revocation", "key_id", id, "error", err)
			}
		},
	})

	// NATS. The api starts without it and reconnects for ever: readiness
	// says whether executions can be served meanwhile.
	nc, err = nats.Connect(cfg.NATSURL,
		nats.Name("wasmwiz-api"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.ConnectHandler(func(*nats.Conn) { keys.SetFanout(true) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			keys.SetFanout(false)
			if err != nil {
				log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			keys.SetFanout(true)
			log.Info("nats reconnected")
		}),
	)
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	if _, err := nc.Subscribe(revoked, func(m *nats.Msg) {
		if id, err := uuid.ParseBytes(m.Data); err == nil {
			keys.Evict(id)
		}
	}); err != nil {
		return fmt.Errorf("subscribe to key revocations: %w", err)
	}
	keys.SetFanout(nc.IsConnected())
	// Last-used times are written until the server has shut down, so that
	// the uses of the last requests are written too.
	keysCtx, stopKeys := context.WithCancel(context.Background())
	defer stopKeys()
	keysDone := make(chan error, 1)
	go func() { keysDone <- keys.Run(keysCtx) }()
	execClient, err := protocol.NewClient(nc, cfg.NATSSubjectPrefix)
	if err != nil {
		return err
	}

	// Redis: the rate limits, shared by every replica. The api serves
	// without it, limiting locally with the same figures.
	ropts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return errors.New("REDIS_URL: invalid")
	}
	// Socket I/O bounded by each call's deadline, so the limiter calls
	// without a guard goroutine; RESP2, as no RESP3 feature is used and
	// RESP3 costs a read per command looking for push notifications
	// (both whatever REDIS_URL says).
	ropts.ContextTimeoutEnabled = true
	ropts.Protocol = 2
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	limiter := ratelimit.New(rdb, log, reg, ratelimit.Config{Prefix: cfg.NATSSubjectPrefix})
	// Gives leased units back after the HTTP server has stopped spending
	// them and before Redis closes (defers run in reverse).
	defer func() {
		if err := limiter.Close(); err != nil {
			log.Warn("rate limit leases not given back: their units stay counted against the keys' limits", "error", err)
		}
	}()

	validator, err := runner.NewValidator(ctx)
	if err != nil {
		return err
	}
	defer validator.Close(context.Background())

	// Usage records and audit events are written in batches off the
	// request path. They are flushed after the HTTP server has shut down,
	// so that the records of the last requests are written too; the
	// deferred Close only serves early returns (Close is idempotent).
	usageRec, err := usagerec.NewExecutionRecorder(db, log, reg, usagerec.Options{})
	if err != nil {
		return err
	}
	auditor, err := usagerec.NewAuditor(db, log, reg, usagerec.Options{})
	if err != nil {
		return err
	}
	usageRec.Start()
	auditor.Start()
	defer func() {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = usageRec.Close(fctx)
		_ = auditor.Close(fctx)
	}()
	// Retention: old usage records, expired ad-hoc modules, old audit events.
	retention := usagerec.NewRetention(db, log, usagerec.RetentionOptions{UsageRetention: cfg.UsageRetention})
	retentionCtx, stopRetention := context.WithCancel(context.Background())
	defer stopRetention()
	retentionDone := make(chan struct{})
	go func() {
		defer close(retentionDone)
		_ = retention.Run(retentionCtx)
	}()

	api := httpapi.New(httpapi.Deps{
		Config:    cfg,
		Logger:    log,
		Store:     db,
		Validator: validator,
		Executor:  execClient,
		Keys:      keys,
		OnModuleDeleted: func(id uuid.UUID) {
			if err := nc.Publish(moduleDeleted, []byte(id.String())); err != nil {
				log.Warn("broadcast module deletion", "module_id", id, "error", err)
			}
		},
		Limiter: limiter,
		Checks: httpapi.HealthChecks{
			Database: db.Ping,
			NATS: func(context.Context) error {
				if !nc.IsConnected() {
					return errors.New("not connected")
				}
				return nil
			},
			Redis:   func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
			Workers: func(ctx context.Context) (int, error) { return execClient.CountWorkers(ctx, 100*time.Millisecond) },
		},
		Metrics: reg,
		Usage:   usageRec,
		Audit:   auditor,
		Version: version,
	})

	// Deleted modules leave every replica's module cache at once.
	if _, err := nc.Subscribe(moduleDeleted, func(m *nats.Msg) {
		if id, err := uuid.ParseBytes(m.Data); err == nil {
			api.EvictModule(id)
		}
	}); err != nil {
		return fmt.Errorf("subscribe to module deletions: %w", err)
	}

	if cfg.PprofAddr != "" {
		stopPprof, err := telemetry.ServePprof(cfg.PprofAddr, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	srv := api.HTTPServer()
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", srv.Addr, err)
	}
	log.InfoContext(ctx, "listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// Out of the load balancer first (readiness 503, Connection: close)
	// while still accepting, so that a rollout refuses no connection; then
	// in-flight requests finish; then NATS drains and the pool closes
	// (deferred), in the reverse order of their start.
	log.Info("shutting down", "shutdown_delay", cfg.ShutdownDelay)
	if cfg.ShutdownDelay > 0 {
		api.StartDraining()
		select {
		case <-time.After(cfg.ShutdownDelay):
		case err := <-errc:
			return fmt.Errorf("serve: %w", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout(cfg))
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	stopKeys()
	if err := <-keysDone; err != nil {
		log.Warn("write key last-used times", "error", err)
	}
	stopRetention()
	<-retentionDone
	fctx, fcancel := context.WithTimeout(context.Background(), recorderFlushTimeout)
	defer fcancel()
	if err := usageRec.Close(fctx); err != nil {
		log.Error("write usage records", "error", err)
	}
	if err := auditor.Close(fctx); err != nil {
		log.Error("write audit events", "error", err)
	}
	log.Info("stopped")
	return nil
}

func keysCommand(ctx context.Context, cfg config.Config, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		return fmt.Errorf("usage: api keys create --name NAME --role admin|user --tier free|basic|pro [--owner OWNER]")
	}
	fs := flag.NewFlagSet("keys create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "a name for the key (required)")
	role := fs.String("role", auth.RoleUser, "admin or user")
	tier := fs.String("tier", config.TierFree, "free, basic or pro")
	owner := fs.String("owner", "admin", "the tenant the key belongs to")
	days := fs.Int("expires-in-days", 0, "days until the key expires (0: never)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	db, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer db.Close()
	svc := auth.NewService(db, auth.Options{Salt: []byte(cfg.APISalt), JWTSecret: []byte(cfg.JWTSecret), JWTTTL: cfg.JWTTTL})
	req := auth.NewKeyRequest{Name: *name, Role: *role, Tier: *tier, Owner: *owner}
	if *days > 0 {
		req.ExpiresInDays = days
	}
	k, secret, err := svc.Bootstrap(ctx, req)
	if err != nil {
		return fmt.Errorf("create key: %w", err)
	}
	fmt.Fprintf(stderr, "created key %s (%s) for owner %q, role %s, tier %s; it is shown once:\n", k.ID, k.Name, k.Owner, k.Role, k.Tier)
	fmt.Fprintln(stdout, secret)
	return nil
}
