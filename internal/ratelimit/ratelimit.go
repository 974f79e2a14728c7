// Package ratelimit enforces the per-key request rate (GCRA) and daily
// execution quota, shared by every api replica through Redis, with a local
// fallback when Redis is unreachable. It knows nothing of HTTP: the caller
// turns a Decision into headers and a 429.
//
// Where it stands: the request rate is go-redis/redis_rate's GCRA (one atomic
// Lua script, so N replicas admit no more than the limit); the daily quota is
// a small check-then-INCR script of its own. Every Redis call is bounded by
// Config.CallTimeout whatever the client's options, and any failure switches
// the Limiter to an in-process GCRA and quota counter with the same figures
// until a probe (at most one per Config.ProbeInterval) finds Redis again.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// ErrInvalidArgument is returned for an empty key or a non-positive limit;
// it is the only error Allow and AllowExecution return.
var ErrInvalidArgument = errors.New("ratelimit: invalid argument")

// Decision is the outcome of counting one request or execution.
type Decision struct {
	Allowed bool
	// Limit is the per-minute figure (or the daily quota).
	Limit     int
	Remaining int
	// ResetAfter is the time until the bucket is full again (the quota: until
	// the UTC day turns). X-RateLimit-Reset, whole seconds rounded up by the caller.
	ResetAfter time.Duration
	// RetryAfter, when !Allowed, is the least wait before a retry can succeed
	// (the caller sends whole seconds, at least 1). Zero when Allowed.
	RetryAfter time.Duration
	// Local is set when the in-process fallback decided, Redis being unreachable.
	Local bool
}

// Config tunes a Limiter; only Prefix matters in production, zero values
// of the rest take the defaults.
type Config struct {
	// Prefix namespaces the Redis keys (two installs may share one Redis).
	// Default "wasmwiz".
	Prefix string
	// CallTimeout bounds each Redis call so a dead or hung Redis cannot stall
	// requests. Default 200ms.
	CallTimeout time.Duration
	// ProbeInterval is how often, at most, Redis is tried while it is down.
	// Default 1s.
	ProbeInterval time.Duration
	// MaxLocalKeys bounds each of the fallback's maps (rate and quota).
	// Default 100,000.
	MaxLocalKeys int
}

const (
	defaultPrefix        = "wasmwiz"
	defaultCallTimeout   = 200 * time.Millisecond
	defaultProbeInterval = time.Second
	defaultMaxLocalKeys  = 100_000

	// quotaGrace keeps a day's counter past midnight so that replicas whose
	// clocks lag a little still find it.
	quotaGrace = time.Hour
)

// Limiter counts requests and executions per key. It is safe for
// concurrent use.
type Limiter struct {
	rdb     *redis.Client // nil: local only
	gcra    *redis_rate.Limiter
	log     *slog.Logger
	cfg     Config
	local   *local
	metrics *metrics
	now     func() time.Time

	healthy atomic.Bool
	down    atomic.Bool // mirrors outage.active for the fast path

	mu     sync.Mutex // guards outage
	outage struct {
		active    bool
		since     time.Time
		nextProbe time.Time
	}
	probes atomic.Int64 // Redis calls made while down; tests watch it
}

// New returns a Limiter on rdb. A nil rdb gives a local-only Limiter (every
// Decision Local, Healthy false), for development and benchmarks. log may be
// nil (discarded); reg may be nil (metrics kept but not exported). Metrics
// already registered on reg by another Limiter are shared.
func New(rdb *redis.Client, log *slog.Logger, reg prometheus.Registerer, cfg Config) *Limiter {
	if cfg.Prefix == "" {
		cfg.Prefix = defaultPrefix
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = defaultCallTimeout
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = defaultProbeInterval
	}
	if cfg.MaxLocalKeys <= 0 {
		cfg.MaxLocalKeys = defaultMaxLocalKeys
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Limiter{
		rdb:     rdb,
		log:     log,
		cfg:     cfg,
		local:   newLocal(cfg.MaxLocalKeys),
		metrics: newMetrics(reg),
		now:     time.Now,
	}
	if rdb != nil {
		l.gcra = redis_rate.NewLimiter(rdb)
		// Optimistic until the first call says otherwise.
		l.healthy.Store(true)
		l.metrics.redisUp.Set(1)
	} else {
		l.metrics.redisUp.Set(0)
	}
	return l
}

// Allow counts one request against key with a rate of perMinute per minute
// and a burst of perMinute. key should be a stable identifier such as the
// API key's id, never the secret. It never fails because of Redis: when
// Redis is unreachable the local fallback decides.
func (l *Limiter) Allow(ctx context.Context, key string, perMinute int) (Decision, error) {
	if key == "" || perMinute <= 0 {
		return Decision{}, fmt.Errorf("%w: Allow(%q, %d)", ErrInvalidArgument, key, perMinute)
	}
	if l.useRedis() {
		limit := redis_rate.Limit{Rate: perMinute, Burst: perMinute, Period: time.Minute}
		res, err := guarded(ctx, l.cfg.CallTimeout, func(ctx context.Context) (*redis_rate.Result, error) {
			return l.gcra.Allow(ctx, l.rateKey(key), limit)
		})
		if err == nil {
			l.redisAnswered(ctx)
			d := Decision{
				Allowed:    res.Allowed > 0,
				Limit:      perMinute,
				Remaining:  max(res.Remaining, 0),
				ResetAfter: max(res.ResetAfter, 0),
			}
			if !d.Allowed {
				d.RetryAfter = max(res.RetryAfter, 0)
			}
			// Mirror the shared state so that a fallback starts from it
			// rather than from a full bucket.
			l.local.seedRate(key, l.now(), d.ResetAfter)
			l.metrics.count(kindRequest, d.Allowed, false)
			return d, nil
		}
		l.redisFailed(ctx, err)
	}
	d := l.local.allow(key, perMinute, l.now())
	l.metrics.count(kindRequest, d.Allowed, true)
	return d, nil
}

// AllowExecution counts one execution against key's quota for the current
// UTC day; when exhausted, RetryAfter lasts until the UTC day turns. A
// refused execution is not counted.
func (l *Limiter) AllowExecution(ctx context.Context, key string, perDay int) (Decision, error) {
	if key == "" || perDay <= 0 {
		return Decision{}, fmt.Errorf("%w: AllowExecution(%q, %d)", ErrInvalidArgument, key, perDay)
	}
	now := l.now().UTC()
	if l.useRedis() {
		untilEnd := untilNextDay(now)
		ttl := int64((untilEnd + quotaGrace + time.Second - 1) / time.Second)
		vals, err := guarded(ctx, l.cfg.CallTimeout, func(ctx context.Context) ([]int64, error) {
			return quotaScript.Run(ctx, l.rdb, []string{l.quotaKey(key, now)}, perDay, ttl).Int64Slice()
		})
		if err == nil && len(vals) != 2 {
			err = fmt.Errorf("quota script returned %d values; want 2", len(vals))
		}
		if err == nil {
			l.redisAnswered(ctx)
			allowed, count := vals[0] == 1, int(vals[1])
			l.local.seedQuota(key, now, count)
			d := quotaDecision(allowed, perDay, count, untilEnd, false)
			l.metrics.count(kindExecution, d.Allowed, false)
			return d, nil
		}
		l.redisFailed(ctx, err)
	}
	allowed, count := l.local.allowExecution(key, perDay, now)
	d := quotaDecision(allowed, perDay, count, untilNextDay(now), true)
	l.metrics.count(kindExecution, d.Allowed, true)
	return d, nil
}

// Healthy reports whether the last Redis call succeeded (for /health:
// degraded when false); true before the first call. While Redis is down it probes it itself, at most
// once per ProbeInterval and bounded by CallTimeout, so that /health
// recovers even when no request arrives.
func (l *Limiter) Healthy() bool {
	if l.rdb == nil {
		return false
	}
	if l.down.Load() && l.claimProbe() {
		_, err := guarded(context.Background(), l.cfg.CallTimeout, func(ctx context.Context) (struct{}, error) {
			return struct{}{}, l.rdb.Ping(ctx).Err()
		})
		if err == nil {
			l.redisAnswered(context.Background())
		} else {
			l.redisFailed(context.Background(), err)
		}
	}
	return l.healthy.Load()
}

// quotaScript counts one execution unless the day's count has reached the
// quota, so a key hammering past its quota does not grow the counter. The
// expiry is set when the day's key is created (and repaired if ever lost).
//
// KEYS[1] the day's counter; ARGV[1] the quota; ARGV[2] TTL in seconds.
// Returns {allowed (0|1), count after this call}.
var quotaScript = redis.NewScript(`
local n = tonumber(redis.call("GET", KEYS[1]) or "0")
if n >= tonumber(ARGV[1]) then
  return {0, n}
end
n = redis.call("INCR", KEYS[1])
if n == 1 or redis.call("TTL", KEYS[1]) < 0 then
  redis.call("EXPIRE", KEYS[1], ARGV[2])
end
return {1, n}
`)

// rateKey is the GCRA key; redis_rate prepends "rate:" to it.
func (l *Limiter) rateKey(key string) string {
	return l.cfg.Prefix + ":req:" + key
}

func (l *Limiter) quotaKey(key string, now time.Time) string {
	return l.cfg.Prefix + ":quota:" + now.UTC().Format(time.DateOnly) + ":" + key
}

func quotaDecision(allowed bool, perDay, count int, untilEnd time.Duration, local bool) Decision {
	d := Decision{
		Allowed:    allowed,
		Limit:      perDay,
		Remaining:  max(perDay-count, 0),
		ResetAfter: untilEnd,
		Local:      local,
	}
	if !allowed {
		d.RetryAfter = untilEnd
	}
	return d
}

// untilNextDay is the time from now to the next UTC midnight.
func untilNextDay(now time.Time) time.Duration {
	now = now.UTC()
	y, m, d := now.Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC).Sub(now)
}

// useRedis says whether this call should go to Redis: always while it is
// up; while it is down, only the one call that claims the next probe.
func (l *Limiter) useRedis() bool {
	if l.rdb == nil {
		return false
	}
	if !l.down.Load() {
		return true
	}
	return l.claimProbe()
}

func (l *Limiter) claimProbe() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.outage.active {
		return true
	}
	now := l.now()
	if now.Before(l.outage.nextProbe) {
		return false
	}
	l.outage.nextProbe = now.Add(l.cfg.ProbeInterval)
	l.probes.Add(1)
	return true
}

func (l *Limiter) redisAnswered(ctx context.Context) {
	l.healthy.Store(true)
	if !l.down.Load() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.outage.active {
		return
	}
	l.outage.active = false
	l.down.Store(false)
	l.metrics.redisUp.Set(1)
	l.log.InfoContext(ctx, "redis reachable again; rate limits are shared across replicas again",
		"outage", l.now().Sub(l.outage.since).Round(time.Millisecond))
}

func (l *Limiter) redisFailed(ctx context.Context, err error) {
	// The caller gave up (client gone, request cancelled): that says
	// nothing about Redis.
	if ctx.Err() != nil {
		return
	}
	l.healthy.Store(false)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.outage.active {
		return
	}
	now := l.now()
	l.outage.active = true
	l.outage.since = now
	l.outage.nextProbe = now.Add(l.cfg.ProbeInterval)
	l.down.Store(true)
	l.metrics.redisUp.Set(0)
	l.metrics.fallbacks.Inc()
	l.log.WarnContext(ctx, "redis unreachable; rate limits are enforced per replica until it answers again",
		"err", err)
}

// guarded runs fn with a deadline of timeout and returns when either ends.
// go-redis honours context deadlines on sockets only with
// Options.ContextTimeoutEnabled, otherwise a hung Redis holds the call for
// ReadTimeout (3 s by default); running fn aside keeps the bound whatever
// the client's options. The abandoned call ends at the client's own timeout.
func guarded[T any](ctx context.Context, timeout time.Duration, fn func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn(ctx)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}
