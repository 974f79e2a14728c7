package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

func mustAllowExecute(t testing.TB, l *Limiter, key string, perMinute, perDay int) (Decision, Decision) {
	t.Helper()
	req, exec, err := l.AllowExecute(context.Background(), key, perMinute, perDay)
	if err != nil {
		t.Fatalf("AllowExecute(%s, %d, %d): %v", key, perMinute, perDay, err)
	}
	return req, exec
}

// checkExecute runs AllowExecute through every case of its contract on
// fresh keys and checks every figure; Redis and the fallback must agree.
func checkExecute(t *testing.T, l *Limiter, wantLocal bool) {
	t.Helper()
	const perMinute, perDay = 5, 3
	emission := time.Minute / perMinute

	// Quota spent first, then the rate: refusals by the quota still count
	// against the rate.
	for i := 1; i <= perMinute+1; i++ {
		req, exec := mustAllowExecute(t, l, "key-e", perMinute, perDay)
		if i <= perMinute {
			if !req.Allowed || req.Local != wantLocal || req.Limit != perMinute || req.Remaining != perMinute-i || req.RetryAfter != 0 {
				t.Fatalf("AllowExecute #%d request = %+v; want allowed, Local %v, Limit %d, Remaining %d",
					i, req, wantLocal, perMinute, perMinute-i)
			}
			if req.ResetAfter <= 0 || req.ResetAfter > time.Duration(i)*emission+time.Millisecond {
				t.Fatalf("AllowExecute #%d request ResetAfter = %v; want in (0, %v]", i, req.ResetAfter, time.Duration(i)*emission)
			}
		}
		switch {
		case i <= perDay:
			if !exec.Allowed || exec.Local != wantLocal || exec.Limit != perDay || exec.Remaining != perDay-i || exec.RetryAfter != 0 {
				t.Fatalf("AllowExecute #%d execution = %+v; want allowed, Local %v, Limit %d, Remaining %d",
					i, exec, wantLocal, perDay, perDay-i)
			}
		case i <= perMinute:
			want := untilNextDay(l.now())
			if exec.Allowed || exec.Local != wantLocal || exec.Limit != perDay || exec.Remaining != 0 ||
				(exec.RetryAfter-want).Abs() > 5*time.Second || exec.ResetAfter != exec.RetryAfter {
				t.Fatalf("AllowExecute #%d execution = %+v; want refused until the UTC day turns (%v), Remaining 0", i, exec, want)
			}
		default:
			if req.Allowed || req.Local != wantLocal || req.Remaining != 0 || req.RetryAfter <= 0 || req.RetryAfter > emission+time.Millisecond {
				t.Fatalf("AllowExecute #%d request = %+v; want refused, RetryAfter in (0, %v]", i, req, emission)
			}
			if exec != (Decision{}) {
				t.Fatalf("AllowExecute #%d execution = %+v; want the zero Decision, the quota not consulted", i, exec)
			}
		}
	}
	// The quota refusals did not grow the day's count.
	if d := mustAllowExecution(t, l, "key-e", perDay+1); !d.Allowed || d.Remaining != 0 {
		t.Errorf("AllowExecution(key-e, %d) after the refusals = %+v; want allowed, Remaining 0", perDay+1, d)
	}

	// A request refused by the rate is not counted against the quota.
	if req, exec := mustAllowExecute(t, l, "key-r", 1, 5); !req.Allowed || !exec.Allowed || exec.Remaining != 4 {
		t.Fatalf("AllowExecute(key-r) = %+v, %+v; want both allowed, quota Remaining 4", req, exec)
	}
	if req, exec := mustAllowExecute(t, l, "key-r", 1, 5); req.Allowed || exec != (Decision{}) {
		t.Fatalf("AllowExecute(key-r) over the rate = %+v, %+v; want refused, quota not consulted", req, exec)
	}
	if d := mustAllowExecution(t, l, "key-r", 5); !d.Allowed || d.Remaining != 3 {
		t.Errorf("AllowExecution(key-r) = %+v; want allowed, Remaining 3 (the refused request not counted)", d)
	}

	// One bucket and one count whichever call counts: other routes use
	// Allow, and multipart executes AllowExecution.
	mustAllow(t, l, "key-s", perMinute)
	mustAllow(t, l, "key-s", perMinute)
	mustAllowExecution(t, l, "key-s", perDay)
	if req, exec := mustAllowExecute(t, l, "key-s", perMinute, perDay); req.Remaining != perMinute-3 || exec.Remaining != perDay-2 {
		t.Errorf("AllowExecute after two Allow and one AllowExecution = %+v, %+v; want Remaining %d and %d",
			req, exec, perMinute-3, perDay-2)
	}
	if d := mustAllow(t, l, "key-s", perMinute); d.Remaining != perMinute-4 {
		t.Errorf("Allow after AllowExecute = %+v; want Remaining %d", d, perMinute-4)
	}
}

func TestAllowExecute(t *testing.T) {
	for _, c := range clientOptions {
		t.Run(c.name, func(t *testing.T) {
			rdb, prefix := machineRedis(t, c.tune)
			l := New(rdb, nil, newRegistry(), Config{Prefix: prefix})
			checkExecute(t, l, false)

			// The day's counter dies after its day, as AllowExecution's does.
			ctx := context.Background()
			key := l.quotaKey("key-e", time.Now())
			if n, err := rdb.Get(ctx, key).Int(); err != nil || n != 4 {
				t.Errorf("GET %s = %d, %v; want 4 (3, and one more with a raised quota)", key, n, err)
			}
			ttl, err := rdb.TTL(ctx, key).Result()
			if until := untilNextDay(time.Now()); err != nil || ttl < until || ttl > until+quotaGrace+5*time.Second {
				t.Errorf("TTL %s = %v, %v; want in [%v, %v]", key, ttl, err, until, until+quotaGrace)
			}
			for _, m := range []struct {
				kind, result string
				want         float64
			}{
				// key-e 6, key-r 2, key-s 2 Allow + 1 AllowExecute + 1 Allow.
				{"request", "allowed", 5 + 1 + 4},
				{"request", "limited", 1 + 1},
				// key-e 3 + 1, key-r 1 + 1, key-s 1 + 1.
				{"execution", "allowed", 4 + 2 + 2},
				{"execution", "limited", 2},
			} {
				if got := value(l.metrics.decisions.WithLabelValues(m.kind, m.result, "redis")); got != m.want {
					t.Errorf("decisions_total{%s,%s,redis} = %v; want %v", m.kind, m.result, got, m.want)
				}
			}
			if n := value(l.metrics.decisions.WithLabelValues("request", "allowed", "local")); n != 0 {
				t.Errorf("decisions_total{request,allowed,local} = %v; want 0", n)
			}
		})
	}
}

func TestLocalAllowExecute(t *testing.T) {
	l, _ := localOnly(t, time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC), Config{})
	checkExecute(t, l, true)
}

func TestAllowExecuteBadArguments(t *testing.T) {
	l := New(nil, nil, nil, Config{})
	for _, c := range []struct {
		name              string
		key               string
		perMinute, perDay int
	}{
		{"empty key", "", 10, 10},
		{"zero rate", "k", 0, 10},
		{"zero quota", "k", 10, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, _, err := l.AllowExecute(context.Background(), c.key, c.perMinute, c.perDay); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("AllowExecute(%q, %d, %d) error = %v; want ErrInvalidArgument", c.key, c.perMinute, c.perDay, err)
			}
		})
	}
}

// Two Limiters with their own clients stand for two api replicas: the
// rate and the quota are exact, and every request the rate admitted was
// counted against the quota.
func TestAllowExecuteHammerTwoReplicas(t *testing.T) {
	_, prefix := machineRedis(t)
	opt, err := redis.ParseURL(testenv.RedisURL)
	if err != nil {
		t.Fatalf("parse TEST_REDIS_URL: %v", err)
	}
	apiOptions(opt)
	const (
		limit, quota = 50, 20
		replicas     = 2
		goroutines   = 16
		each         = 10
	)
	var limiters []*Limiter
	for range replicas {
		rdb := redis.NewClient(opt)
		t.Cleanup(func() { rdb.Close() })
		// This test is about counting: a cold pool dialling 16 connections
		// at once under -race on a busy machine may take longer than the
		// default CallTimeout, and one timeout would hand decisions to the
		// fallback.
		limiters = append(limiters, New(rdb, nil, newRegistry(), Config{Prefix: prefix, CallTimeout: 5 * time.Second}))
	}

	var admitted, executed, refusedByQuota, local atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, l := range limiters {
		for range goroutines {
			wg.Go(func() {
				<-start
				for range each {
					req, exec, err := l.AllowExecute(context.Background(), "hammered", limit, quota)
					if err != nil {
						t.Errorf("AllowExecute: %v", err)
						return
					}
					if req.Local {
						local.Add(1)
					}
					switch {
					case req.Allowed && exec.Allowed:
						admitted.Add(1)
						executed.Add(1)
					case req.Allowed:
						admitted.Add(1)
						refusedByQuota.Add(1)
					case exec != (Decision{}):
						t.Errorf("AllowExecute refused by the rate with execution %+v; want the zero Decision", exec)
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
	refilled := int64(elapsed / (time.Minute / limit))
	if got := admitted.Load(); got < limit || got > limit+refilled {
		t.Errorf("%d requests admitted by the rate in %v; want %d (+%d refilled)", got, elapsed, limit, refilled)
	}
	if got := executed.Load(); got != quota {
		t.Errorf("%d executions allowed; want exactly the quota, %d", got, quota)
	}
	if got, want := executed.Load()+refusedByQuota.Load(), admitted.Load(); got != want {
		t.Errorf("%d requests decided by the quota; want every one the rate admitted, %d", got, want)
	}
}

// TestAllowExecuteOutage: the fallback continues AllowExecute's counts from
// where Redis left them.
func TestAllowExecuteOutage(t *testing.T) {
	srv := startRedisServer(t, testenv.FreePort(t))
	opt := &redis.Options{Addr: srv.addr()}
	apiOptions(opt)
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	l := New(rdb, nil, newRegistry(), Config{Prefix: "wwzt"})
	const limit, quota = 10, 3

	for i := 1; i <= 2; i++ {
		if req, exec := mustAllowExecute(t, l, "key", limit, quota); req.Local || req.Remaining != limit-i || exec.Remaining != quota-i {
			t.Fatalf("before the outage: AllowExecute #%d = %+v, %+v; want from Redis, Remaining %d and %d",
				i, req, exec, limit-i, quota-i)
		}
	}
	srv.kill()
	want := []struct {
		reqRemaining int
		execAllowed  bool
	}{{7, true}, {6, false}, {5, false}}
	for i, w := range want {
		req, exec := mustAllowExecute(t, l, "key", limit, quota)
		if !req.Allowed || !req.Local || req.Remaining != w.reqRemaining || exec.Allowed != w.execAllowed || !exec.Local || exec.Remaining != 0 {
			t.Fatalf("during the outage: AllowExecute #%d = %+v, %+v; want locally Remaining %d, execution allowed %v, quota Remaining 0",
				i+3, req, exec, w.reqRemaining, w.execAllowed)
		}
	}
	if n := value(l.metrics.decisions.WithLabelValues("execution", "limited", "local")); n != 2 {
		t.Errorf("decisions_total{execution,limited,local} = %v; want 2", n)
	}
}

// hungRedis is a TCP listener that accepts connections and never answers,
// a Redis hung for good. It lives until the test ends.
func hungRedis(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestDirectCallsHungRedis: with Options.ContextTimeoutEnabled the Limiter
// calls the client directly, no guard goroutine, and a Redis that never
// answers still costs a call no more than CallTimeout, though the client's
// own timeouts are a minute.
func TestDirectCallsHungRedis(t *testing.T) {
	addr := hungRedis(t)
	const callTimeout = 200 * time.Millisecond
	// Far below the client's minute, far above CallTimeout on a busy machine.
	const bound = 3 * time.Second
	calls := []struct {
		name string
		do   func(l *Limiter) (local bool)
	}{
		{"Allow", func(l *Limiter) bool { return mustAllow(t, l, "key", 10).Local }},
		{"AllowExecution", func(l *Limiter) bool { return mustAllowExecution(t, l, "key", 10).Local }},
		{"AllowExecute", func(l *Limiter) bool {
			req, exec := mustAllowExecute(t, l, "key", 10, 10)
			return req.Local && exec.Local
		}},
		{"Healthy", func(l *Limiter) bool {
			l.Allow(context.Background(), "key", 10) // down, so that Healthy probes
			time.Sleep(l.cfg.ProbeInterval)
			return !l.Healthy()
		}},
	}
	for _, protocol := range []int{2, 3} {
		for _, c := range calls {
			t.Run(fmt.Sprintf("%s/RESP%d", c.name, protocol), func(t *testing.T) {
				rdb := redis.NewClient(&redis.Options{
					Addr: addr, Protocol: protocol, ContextTimeoutEnabled: true,
					DialTimeout: time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Minute,
				})
				t.Cleanup(func() { rdb.Close() })
				l := New(rdb, nil, newRegistry(), Config{Prefix: "wwzt", CallTimeout: callTimeout, ProbeInterval: time.Millisecond})
				if !l.direct {
					t.Fatalf("Limiter on a client with ContextTimeoutEnabled: direct = false; want true")
				}
				began := time.Now()
				local := c.do(l)
				elapsed := time.Since(began)
				if !local {
					t.Errorf("%s on a hung Redis: decided by Redis; want the local fallback", c.name)
				}
				if elapsed > bound+l.cfg.ProbeInterval {
					t.Errorf("%s on a hung Redis took %v; want about CallTimeout (%v), under %v", c.name, elapsed, callTimeout, bound)
				}
			})
		}
	}
}

func TestRefused(t *testing.T) {
	rdb, prefix := machineRedis(t, apiOptions)
	l := New(rdb, nil, newRegistry(), Config{Prefix: prefix})
	const limit = 3
	if d, ok := l.Refused("key", limit); ok {
		t.Fatalf("Refused(fresh key) = %+v, true; want false", d)
	}
	for i := 1; i <= limit; i++ {
		mustAllow(t, l, "key", limit)
		if d, ok := l.Refused("key", limit); ok != (i == limit) {
			t.Fatalf("Refused after %d of %d requests = %+v, %v; want %v", i, limit, d, ok, i == limit)
		}
	}
	d, ok := l.Refused("key", limit)
	emission := time.Minute / limit
	if !ok || d.Allowed || d.Local || d.Limit != limit || d.Remaining != 0 || d.RetryAfter <= 0 || d.RetryAfter > emission ||
		d.ResetAfter <= d.RetryAfter || d.ResetAfter > time.Minute {
		t.Fatalf("Refused over the rate = %+v, %v; want refused from Redis's state, RetryAfter in (0, %v]", d, ok, emission)
	}
	if r := mustAllow(t, l, "key", limit); r.Allowed {
		t.Fatalf("Allow after Refused = %+v; want refused by Redis too", r)
	}
	if n := value(l.metrics.decisions.WithLabelValues("request", "limited", "redis")); n != 3 {
		t.Errorf("decisions_total{request,limited,redis} = %v; want 3 (Refused's two and Allow's)", n)
	}
	// The state is the key's, whichever call counted: AllowExecute too.
	mustAllowExecute(t, l, "key-e", 1, 10)
	if _, ok := l.Refused("key-e", 1); !ok {
		t.Errorf("Refused after AllowExecute spent a burst of 1 = false; want true")
	}
}

// TestRefusedNeverAheadOfRedis hammers one key at 10 a second, asking
// Refused before every Allow. A refusal says when the key may retry; Redis
// must never admit the key before then, or Refused would have refused a
// request Redis admitted. The record of Redis's state is taken before each
// call, so it can only lag behind Redis.
func TestRefusedNeverAheadOfRedis(t *testing.T) {
	rdb, prefix := machineRedis(t, apiOptions)
	l := New(rdb, nil, newRegistry(), Config{Prefix: prefix, CallTimeout: 5 * time.Second})
	const limit = 600     // one every 100 ms
	var retryAt time.Time // the earliest retry the last refusal allowed
	var refused, admitted int
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		asked := time.Now()
		if r, ok := l.Refused("key", limit); ok {
			refused++
			retryAt = asked.Add(r.RetryAfter)
		}
		d := mustAllow(t, l, "key", limit)
		if d.Local {
			t.Fatalf("Allow = %+v; want decided by Redis", d)
		}
		if answered := time.Now(); d.Allowed && answered.Before(retryAt) {
			t.Fatalf("Redis admitted the key %v before the retry time of Refused's last refusal", retryAt.Sub(answered))
		}
		if d.Allowed {
			admitted++
		}
	}
	if refused == 0 || admitted <= limit {
		t.Fatalf("%d refusals known ahead and %d admissions; want some of each past the burst of %d", refused, admitted, limit)
	}
}

// The fallback's own counts may run ahead of Redis's: Refused trusts them
// only while they decide, not once Redis answers again.
func TestRefusedTrustsTheFallbackOnlyWhileItDecides(t *testing.T) {
	now := time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC)
	m := newLocal(100)
	m.allow("key", 1, now)
	if _, ok := m.refused("key", 1, now, false); ok {
		t.Errorf("refused(fallback's count, Redis up) = true; want false")
	}
	d, ok := m.refused("key", 1, now, true)
	if !ok || !d.Local || d.RetryAfter != time.Minute {
		t.Errorf("refused(fallback's count, Redis down) = %+v, %v; want refused locally, RetryAfter 1m", d, ok)
	}
	m.seedRate("key", now, time.Minute)
	if d, ok := m.refused("key", 1, now, false); !ok || d.Local {
		t.Errorf("refused(Redis's record) = %+v, %v; want refused, not Local", d, ok)
	}
	if _, ok := m.refused("key", 1, now.Add(time.Minute), false); ok {
		t.Errorf("refused a minute later = true; want false, the bucket full again")
	}

	// A local-only Limiter trusts its own counts: nothing else decides.
	l, _ := localOnly(t, now, Config{})
	mustAllow(t, l, "key", 1)
	if d, ok := l.Refused("key", 1); !ok || !d.Local {
		t.Errorf("local-only Refused = %+v, %v; want refused locally", d, ok)
	}
}
