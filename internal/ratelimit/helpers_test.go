package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

// machineRedis returns a client of the machine's Redis, closed at the end
// of the test, and a key prefix of the test's own; the test's keys are
// deleted at the end. tune, if any, adjusts the client's options.
func machineRedis(t testing.TB, tune ...func(*redis.Options)) (*redis.Client, string) {
	t.Helper()
	testenv.RequireRedis(t)
	opt, err := redis.ParseURL(testenv.RedisURL)
	if err != nil {
		t.Fatalf("parse TEST_REDIS_URL: %v", err)
	}
	for _, f := range tune {
		f(opt)
	}
	rdb := redis.NewClient(opt)
	prefix := testenv.Prefix(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, pattern := range []string{prefix + ":*", "rate:" + prefix + ":*"} {
			keys, err := rdb.Keys(ctx, pattern).Result()
			if err == nil && len(keys) > 0 {
				rdb.Del(ctx, keys...)
			}
		}
		rdb.Close()
	})
	return rdb, prefix
}

// apiOptions sets what cmd/api sets on its client: socket I/O bounded by
// the context (so the Limiter calls directly) and RESP2.
func apiOptions(o *redis.Options) {
	o.ContextTimeoutEnabled = true
	o.Protocol = 2
}

// clientOptions are the two kinds of client a Limiter meets: the api's,
// called directly, and go-redis's defaults, called through guarded.
var clientOptions = []struct {
	name string
	tune func(*redis.Options)
}{
	{"api client", apiOptions},
	{"default client", func(*redis.Options) {}},
}

// logBuffer collects a Limiter's log lines.
type logBuffer struct{ testenv.SyncBuffer }

// count is how many lines hold s.
func (b *logBuffer) count(s string) int {
	n := 0
	for line := range strings.Lines(b.String()) {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

func newLogger(buf *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func mustAllow(t testing.TB, l *Limiter, key string, perMinute int) Decision {
	t.Helper()
	d, err := l.Allow(context.Background(), key, perMinute)
	if err != nil {
		t.Fatalf("Allow(%s, %d): %v", key, perMinute, err)
	}
	return d
}

func mustAllowExecution(t testing.TB, l *Limiter, key string, perDay int) Decision {
	t.Helper()
	d, err := l.AllowExecution(context.Background(), key, perDay)
	if err != nil {
		t.Fatalf("AllowExecution(%s, %d): %v", key, perDay, err)
	}
	return d
}

// redisServer is a redis-server child process of the test.
type redisServer struct {
	t    testing.TB
	port int
	cmd  *exec.Cmd
}

// startRedisServer starts redis-server on port, waits until it answers,
// and kills it when the test ends.
func startRedisServer(t testing.TB, port int) *redisServer {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not on PATH (%v); install it with: apt-get install redis-server", err)
	}
	cmd := exec.Command(path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server on port %d: %v", port, err)
	}
	s := &redisServer{t: t, port: port, cmd: cmd}
	t.Cleanup(s.kill)

	rdb := redis.NewClient(&redis.Options{Addr: s.addr(), MaxRetries: -1})
	defer rdb.Close()
	testenv.Eventually(t, 10*time.Second, fmt.Sprintf("redis-server on port %d to answer PING", port), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return rdb.Ping(ctx).Err() == nil
	})
	return s
}

func (s *redisServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// kill ends the server and waits for it; calling it again does nothing.
func (s *redisServer) kill() {
	if s.cmd.ProcessState != nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT) // a stopped process dies only once continued
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// stop freezes the server: connections stay open and nothing answers.
func (s *redisServer) stop() { s.signal(syscall.SIGSTOP) }
func (s *redisServer) cont() { s.signal(syscall.SIGCONT) }

func (s *redisServer) signal(sig syscall.Signal) {
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal %v to redis-server: %v", sig, err)
	}
}

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		panic(err)
	}
	if c := out.GetCounter(); c != nil {
		return c.GetValue()
	}
	return out.GetGauge().GetValue()
}
