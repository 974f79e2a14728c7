package ratelimit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

// checkTenPerMinute spends a fresh key's 10/minute burst and checks every
// figure on the way, then the refusal of the 11th request.
func checkTenPerMinute(t *testing.T, l *Limiter, key string, wantLocal bool) {
	t.Helper()
	const limit = 10
	emission := time.Minute / limit
	for i := 1; i <= limit; i++ {
		d := mustAllow(t, l, key, limit)
		if !d.Allowed || d.Local != wantLocal || d.Limit != limit || d.Remaining != limit-i || d.RetryAfter != 0 {
			t.Fatalf("Allow #%d = %+v; want allowed, Local %v, Limit %d, Remaining %d, RetryAfter 0",
				i, d, wantLocal, limit, limit-i)
		}
		// i emission intervals spent, minus however long the test has run.
		if d.ResetAfter <= 0 || d.ResetAfter > time.Duration(i)*emission+time.Millisecond {
			t.Fatalf("Allow #%d ResetAfter = %v; want in (0, %v]", i, d.ResetAfter, time.Duration(i)*emission)
		}
	}
	d := mustAllow(t, l, key, limit)
	if d.Allowed || d.Local != wantLocal || d.Remaining != 0 || d.Limit != limit {
		t.Fatalf("Allow #11 = %+v; want refused, Local %v, Remaining 0, Limit %d", d, wantLocal, limit)
	}
	if d.RetryAfter < time.Second || d.RetryAfter > emission+time.Millisecond {
		t.Fatalf("Allow #11 RetryAfter = %v; want in [1s, %v]", d.RetryAfter, emission)
	}
	if d.ResetAfter <= d.RetryAfter || d.ResetAfter > time.Minute+time.Millisecond {
		t.Fatalf("Allow #11 ResetAfter = %v; want in (RetryAfter %v, 1m]", d.ResetAfter, d.RetryAfter)
	}
}

func TestAllowTenPerMinute(t *testing.T) {
	rdb, prefix := machineRedis(t)
	reg := newRegistry()
	l := New(rdb, nil, reg, Config{Prefix: prefix})

	checkTenPerMinute(t, l, "key-a", false)

	// Keys are independent, and so are installs sharing one Redis.
	if d := mustAllow(t, l, "key-b", 10); !d.Allowed || d.Remaining != 9 {
		t.Errorf("Allow(key-b) = %+v; want allowed, Remaining 9", d)
	}
	other := New(rdb, nil, newRegistry(), Config{Prefix: prefix + "-other"})
	if d := mustAllow(t, other, "key-a", 10); !d.Allowed || d.Remaining != 9 {
		t.Errorf("Allow(key-a) under another prefix = %+v; want allowed, Remaining 9", d)
	}

	if !l.Healthy() {
		t.Errorf("Healthy() = false; want true")
	}
	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{name: "allowed via redis", got: value(l.metrics.decisions.WithLabelValues("request", "allowed", "redis")), want: 11},
		{name: "limited via redis", got: value(l.metrics.decisions.WithLabelValues("request", "limited", "redis")), want: 1},
		{name: "local", got: value(l.metrics.decisions.WithLabelValues("request", "allowed", "local")), want: 0},
		{name: "redis_up", got: value(l.metrics.redisUp), want: 1},
		{name: "fallback_total", got: value(l.metrics.fallbacks), want: 0},
	} {
		if c.got != c.want {
			t.Errorf("metric %s = %v; want %v", c.name, c.got, c.want)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	series := map[string]int{}
	for _, f := range families {
		series[f.GetName()] = len(f.GetMetric())
	}
	for name, want := range map[string]int{
		"wasmwiz_ratelimit_decisions_total": 8,
		"wasmwiz_ratelimit_redis_up":        1,
		"wasmwiz_ratelimit_fallback_total":  1,
		// Leases: none of them here, but the series are there from the start.
		"wasmwiz_ratelimit_lease_executes_total": 1,
		"wasmwiz_ratelimit_lease_returned_total": 1,
		"wasmwiz_ratelimit_lease_lost_total":     1,
	} {
		if series[name] != want {
			t.Errorf("registry holds %d series of %s; want %d", series[name], name, want)
		}
	}
}

func TestBadArguments(t *testing.T) {
	l := New(nil, nil, nil, Config{})
	for _, c := range []struct {
		name  string
		key   string
		limit int
	}{
		{"empty key", "", 10},
		{"zero limit", "k", 0},
		{"negative limit", "k", -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := l.Allow(context.Background(), c.key, c.limit); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("Allow(%q, %d) error = %v; want ErrInvalidArgument", c.key, c.limit, err)
			}
			if _, err := l.AllowExecution(context.Background(), c.key, c.limit); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("AllowExecution(%q, %d) error = %v; want ErrInvalidArgument", c.key, c.limit, err)
			}
		})
	}
}

// Two Limiters with their own clients stand for two api replicas.
func TestAllowHammerTwoReplicas(t *testing.T) {
	_, prefix := machineRedis(t)
	opt, err := redis.ParseURL(testenv.RedisURL)
	if err != nil {
		t.Fatalf("parse TEST_REDIS_URL: %v", err)
	}
	const (
		limit      = 50
		replicas   = 2
		goroutines = 16
		each       = 10
	)
	var limiters []*Limiter
	for range replicas {
		rdb := redis.NewClient(opt)
		t.Cleanup(func() { rdb.Close() })
		// Generous: a cold pool under -race on a busy machine may take
		// longer than the default, and one timeout would hand decisions to
		// the fallback; this test is about counting.
		limiters = append(limiters, New(rdb, nil, newRegistry(), Config{Prefix: prefix, CallTimeout: 5 * time.Second}))
	}

	var allowed, local atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, l := range limiters {
		for range goroutines {
			wg.Go(func() {
				<-start
				for range each {
					d, err := l.Allow(context.Background(), "hammered", limit)
					if err != nil {
						t.Errorf("Allow: %v", err)
						return
					}
					if d.Allowed {
						allowed.Add(1)
					}
					if d.Local {
						local.Add(1)
					}
				}
			})
		}
	}
	began := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(began)

	if n := local.Load(); n > 0 {
		t.Fatalf("%d of %d decisions were local; want all from Redis", n, replicas*goroutines*each)
	}
	// GCRA earns one request back every minute/limit; a machine slow enough
	// to take that long legitimately admits those too.
	refilled := int64(elapsed / (time.Minute / limit))
	if got := allowed.Load(); got < limit || got > limit+refilled {
		t.Errorf("%d replicas x %d goroutines x %d requests: %d allowed in %v; want %d (+%d refilled)",
			replicas, goroutines, each, got, elapsed, limit, refilled)
	}
}

func TestAllowExecutionDailyQuota(t *testing.T) {
	rdb, prefix := machineRedis(t)
	l := New(rdb, nil, newRegistry(), Config{Prefix: prefix})
	const quota = 3

	for i := 1; i <= quota; i++ {
		d := mustAllowExecution(t, l, "key-q", quota)
		if !d.Allowed || d.Local || d.Limit != quota || d.Remaining != quota-i || d.RetryAfter != 0 {
			t.Fatalf("AllowExecution #%d = %+v; want allowed from Redis, Limit %d, Remaining %d", i, d, quota, quota-i)
		}
	}
	for i := quota + 1; i <= quota+3; i++ {
		d := mustAllowExecution(t, l, "key-q", quota)
		want := untilNextDay(time.Now())
		if d.Allowed || d.Remaining != 0 || d.Local {
			t.Fatalf("AllowExecution #%d = %+v; want refused from Redis, Remaining 0", i, d)
		}
		if diff := (d.RetryAfter - want).Abs(); diff > 5*time.Second {
			t.Fatalf("AllowExecution #%d RetryAfter = %v; want %v (until the UTC day turns)", i, d.RetryAfter, want)
		}
		if d.ResetAfter != d.RetryAfter {
			t.Fatalf("AllowExecution #%d ResetAfter = %v; want RetryAfter %v", i, d.ResetAfter, d.RetryAfter)
		}
	}

	// Refusals do not grow the counter, and the counter dies after its day.
	ctx := context.Background()
	key := l.quotaKey("key-q", time.Now())
	if n, err := rdb.Get(ctx, key).Int(); err != nil || n != quota {
		t.Errorf("GET %s = %d, %v; want %d", key, n, err, quota)
	}
	ttl, err := rdb.TTL(ctx, key).Result()
	if until := untilNextDay(time.Now()); err != nil || ttl < until || ttl > until+quotaGrace+5*time.Second {
		t.Errorf("TTL %s = %v, %v; want in [%v, %v]", key, ttl, err, until, until+quotaGrace)
	}

	if d := mustAllowExecution(t, l, "key-other", quota); !d.Allowed || d.Remaining != quota-1 {
		t.Errorf("AllowExecution(key-other) = %+v; want allowed, Remaining %d", d, quota-1)
	}
	// A raised quota (a tier upgrade) applies at once to the day's count.
	if d := mustAllowExecution(t, l, "key-q", quota+1); !d.Allowed || d.Remaining != 0 {
		t.Errorf("AllowExecution(key-q, %d) = %+v; want allowed, Remaining 0", quota+1, d)
	}
}

// A caller that gives up says nothing about Redis: decide locally, stay healthy.
func TestCancelledCallerIsNotAnOutage(t *testing.T) {
	rdb, prefix := machineRedis(t)
	logs := &logBuffer{}
	l := New(rdb, newLogger(logs), newRegistry(), Config{Prefix: prefix})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	d, err := l.Allow(ctx, "key-c", 10)
	if err != nil || !d.Allowed || !d.Local {
		t.Errorf("Allow(cancelled ctx) = %+v, %v; want allowed locally, no error", d, err)
	}
	if !l.Healthy() || logs.count("redis unreachable") != 0 {
		t.Errorf("after a cancelled call: Healthy() = %v, logs %q; want healthy, no warning", l.Healthy(), logs.String())
	}
	if d := mustAllow(t, l, "key-c", 10); d.Local {
		t.Errorf("Allow after a cancelled call = %+v; want decided by Redis", d)
	}
}
