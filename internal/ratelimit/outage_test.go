package ratelimit

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

const (
	warnDown = "redis unreachable"
	infoBack = "redis reachable again"
)

// TestRedisOutage kills a Redis of the test's own mid-test: the Limiter
// keeps deciding locally with the same figures, from where Redis left off,
// logs the outage once, and returns to Redis when a server answers again on
// the same address.
func TestRedisOutage(t *testing.T) {
	port := testenv.FreePort(t)
	srv := startRedisServer(t, port)
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr()})
	t.Cleanup(func() { rdb.Close() })
	logs := &logBuffer{}
	l := New(rdb, newLogger(logs), newRegistry(), Config{Prefix: "wwzt", ProbeInterval: 250 * time.Millisecond})
	const limit, quota = 10, 3

	for i := 1; i <= 4; i++ {
		if d := mustAllow(t, l, "key", limit); !d.Allowed || d.Local || d.Remaining != limit-i {
			t.Fatalf("before the outage: Allow #%d = %+v; want allowed by Redis, Remaining %d", i, d, limit-i)
		}
	}
	if d := mustAllowExecution(t, l, "key", quota); !d.Allowed || d.Local || d.Remaining != quota-1 {
		t.Fatalf("before the outage: AllowExecution = %+v; want allowed by Redis, Remaining %d", d, quota-1)
	}

	srv.kill()

	for i := 5; i <= limit; i++ {
		if d := mustAllow(t, l, "key", limit); !d.Allowed || !d.Local || d.Remaining != limit-i {
			t.Fatalf("during the outage: Allow #%d = %+v; want allowed locally, Remaining %d", i, d, limit-i)
		}
	}
	if d := mustAllow(t, l, "key", limit); d.Allowed || !d.Local || d.RetryAfter < time.Second {
		t.Fatalf("during the outage: Allow #%d = %+v; want refused locally, RetryAfter >= 1s", limit+1, d)
	}
	for i := 2; i <= quota; i++ {
		if d := mustAllowExecution(t, l, "key", quota); !d.Allowed || !d.Local || d.Remaining != quota-i {
			t.Fatalf("during the outage: AllowExecution #%d = %+v; want allowed locally, Remaining %d", i, d, quota-i)
		}
	}
	if d := mustAllowExecution(t, l, "key", quota); d.Allowed || !d.Local || d.RetryAfter <= 0 {
		t.Fatalf("during the outage: AllowExecution #%d = %+v; want refused locally until the day turns", quota+1, d)
	}
	if l.Healthy() {
		t.Errorf("during the outage: Healthy() = true; want false")
	}
	if up := value(l.metrics.redisUp); up != 0 {
		t.Errorf("during the outage: redis_up = %v; want 0", up)
	}

	// Probes of the dead Redis fail without logging again.
	testenv.Eventually(t, 5*time.Second, "a probe of the dead Redis", func() bool {
		mustAllow(t, l, "other", limit)
		return l.probes.Load() >= 2
	})
	if n := logs.count(warnDown); n != 1 || logs.count("level=WARN") != 1 {
		t.Errorf("during the outage: %d %q warnings; want exactly 1; logs:\n%s", n, warnDown, logs)
	}
	if n := value(l.metrics.fallbacks); n != 1 {
		t.Errorf("fallback_total = %v; want 1", n)
	}

	startRedisServer(t, port)
	testenv.Eventually(t, 5*time.Second, "the Limiter back on Redis", func() bool {
		return !mustAllow(t, l, "after", limit).Local
	})
	if !l.Healthy() {
		t.Errorf("after the outage: Healthy() = false; want true")
	}
	if d := mustAllowExecution(t, l, "after", quota); d.Local {
		t.Errorf("after the outage: AllowExecution = %+v; want decided by Redis", d)
	}
	if up := value(l.metrics.redisUp); up != 1 {
		t.Errorf("after the outage: redis_up = %v; want 1", up)
	}
	if down, back := logs.count(warnDown), logs.count(infoBack); down != 1 || back != 1 {
		t.Errorf("logs hold %d %q and %d %q; want one of each; logs:\n%s", down, warnDown, back, infoBack, logs)
	}
	if n := value(l.metrics.decisions.WithLabelValues("request", "limited", "local")); n < 1 {
		t.Errorf("decisions_total{request,limited,local} = %v; want >= 1", n)
	}
}

// TestRedisHung freezes Redis (SIGSTOP): connections stay open and nothing
// answers, so only the per-call timeout gets requests decided.
func TestRedisHung(t *testing.T) {
	srv := startRedisServer(t, testenv.FreePort(t))
	// The client's defaults: its 3 s read timeout ignores the context; the
	// Limiter's own bound must not.
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr()})
	t.Cleanup(func() { rdb.Close() })
	logs := &logBuffer{}
	l := New(rdb, newLogger(logs), newRegistry(), Config{Prefix: "wwzt", CallTimeout: 100 * time.Millisecond, ProbeInterval: 250 * time.Millisecond})

	if d := mustAllow(t, l, "key", 10); d.Local {
		t.Fatalf("before the freeze: Allow = %+v; want decided by Redis", d)
	}
	srv.stop()
	if d := mustAllow(t, l, "key", 10); !d.Allowed || !d.Local || d.Remaining != 8 {
		t.Errorf("frozen: Allow = %+v; want allowed locally, Remaining 8", d)
	}
	if d := mustAllowExecution(t, l, "key", 5); !d.Allowed || !d.Local {
		t.Errorf("frozen: AllowExecution = %+v; want allowed locally", d)
	}
	if l.Healthy() {
		t.Errorf("frozen: Healthy() = true; want false")
	}
	srv.cont()
	// Healthy probes by itself, so /health recovers without traffic.
	testenv.Eventually(t, 10*time.Second, "Healthy() after the thaw", l.Healthy)
	if d := mustAllow(t, l, "key", 10); d.Local {
		t.Errorf("thawed: Allow = %+v; want decided by Redis", d)
	}
	if down, back := logs.count(warnDown), logs.count(infoBack); down != 1 || back != 1 {
		t.Errorf("logs hold %d %q and %d %q; want one of each; logs:\n%s", down, warnDown, back, infoBack, logs)
	}
}
