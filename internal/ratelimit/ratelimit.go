// Package ratelimit enforces the per-key request rate (GCRA) and daily
// execution quota, shared by every api replica through Redis, with a local
// fallback when Redis is unreachable. It knows nothing of HTTP: the caller
// turns a Decision into headers and a 429.
//
// Where it stands: the request rate is go-redis/redis_rate's GCRA (one atomic
// Lua script, so N replicas admit no more than the limit); the daily quota is
// a small check-then-INCR script of its own; an execute request takes both
// in one script and one round trip (AllowExecute). Every Redis call is
// bounded by Config.CallTimeout whatever the client's options, and any
// failure switches the Limiter to an in-process GCRA and quota counter with
// the same figures until a probe (at most one per Config.ProbeInterval)
// finds Redis again.
//
// Leases: a key executing many times a second would otherwise cost a Redis
// round trip per execute (about a fifth of the platform's CPU per execute,
// api and redis-server together). So AllowExecute asks Redis for up to n
// units at once, each one unit of the rate and one of the day's quota,
// granted atomically by the same script (as many as GCRA and the quota
// admit), spends one and keeps the rest in a per-replica lease, from which
// the key's next executes are answered without Redis. Redis counts a unit
// when it grants it, so the replicas together never admit more than the
// limits; a leased unit is only admitted later than Redis counted it, by
// at most the lease window W (Config.LeaseWindow). A lease lives at most W;
// what it has not spent by then (or when the key's limits or UTC day
// change, or on Close) goes back to Redis, the TAT moved back and the
// counter down: by a background sweep every W/2, or within the round trip
// that fetches the key's next lease, never by a call of its own on the
// request path. Units that cannot go back (Redis down) stay counted: the
// replicas then admit less than the limits, never more. n is 1, every
// execute a round trip as before, unless the key made at least
// hotPerWindow executes in the last window; then twice those, within what
// the key's rate refills in W, a thousandth of its quota, and maxLease. So
// low-rate and small-quota keys stay exact, and a lease is as large as the
// key's recent demand: what a replica holds unused, and so may keep from
// the others for up to W, is small. While one execute of a key fetches a
// lease, the key's other executes wait for it rather than call Redis too.
// Why leases rather than a local share of the limit per replica:
// shares need the number of replicas and rebalancing, and a share held by
// an idle replica is lost to the busy ones; a lease is paid for in Redis
// before it is used and handed back after W, so the limits stay exact
// whatever the number of replicas, and one round trip buys many executes.
//
// Refused stays exact with leases: it never refuses a key this replica
// holds units of, and Redis takes units back into a key's rate only while
// the rate would admit a request anyway, so a give-back never turns Redis's
// refusal, as Refused read it from an earlier answer, into an admission
// (see giveBackLua).
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// ErrInvalidArgument is returned for an empty key or a non-positive limit;
// it is the only error Allow, AllowExecution and AllowExecute return.
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
	// MaxLocalKeys bounds each of the fallback's maps (rate and quota), and
	// the keys whose execute demand is tracked for leases. Default 100,000.
	MaxLocalKeys int
	// LeaseWindow is how long a lease of a hot key's execute units lives,
	// and the window its demand is measured over (see the package comment).
	// Default 100ms; negative turns leases off: one Redis round trip per
	// execute.
	LeaseWindow time.Duration
}

const (
	defaultPrefix        = "wasmwiz"
	defaultCallTimeout   = 200 * time.Millisecond
	defaultProbeInterval = time.Second
	defaultMaxLocalKeys  = 100_000

	// quotaGrace keeps a day's counter past midnight so that replicas whose
	// clocks lag a little still find it.
	quotaGrace = time.Hour

	// redisRatePrefix is what redis_rate prepends to its keys; the execute
	// script uses the same key, so that every route counts against one
	// bucket.
	redisRatePrefix = "rate:"
)

// Limiter counts requests and executions per key. It is safe for
// concurrent use.
type Limiter struct {
	rdb  *redis.Client // nil: local only
	gcra *redis_rate.Limiter
	// direct: the client bounds its socket I/O by the context's deadline
	// (Options.ContextTimeoutEnabled), so calls need no guard goroutine.
	direct  bool
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

	leases *leaseTable // nil: leases off, or no Redis
	closed atomic.Bool
	// executeCalls counts AllowExecute's Redis round trips; tests and
	// benchmarks watch it.
	executeCalls atomic.Int64
}

// New returns a Limiter on rdb. A nil rdb gives a local-only Limiter (every
// Decision Local, Healthy false), for development and benchmarks. log may be
// nil (discarded); reg may be nil (metrics kept but not exported). Metrics
// already registered on reg by another Limiter are shared. Close the
// Limiter when done with it: the first execute starts a goroutine that
// returns expired leases.
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
	if cfg.LeaseWindow == 0 {
		cfg.LeaseWindow = defaultLeaseWindow
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
		l.direct = rdb.Options().ContextTimeoutEnabled
		// Optimistic until the first call says otherwise.
		l.healthy.Store(true)
		l.metrics.redisUp.Set(1)
		if cfg.LeaseWindow > 0 {
			l.leases = newLeaseTable(cfg.LeaseWindow, cfg.MaxLocalKeys)
		}
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
		start := l.now()
		limit := redis_rate.Limit{Rate: perMinute, Burst: perMinute, Period: time.Minute}
		res, err := call(ctx, l, func(ctx context.Context) (*redis_rate.Result, error) {
			return l.gcra.Allow(ctx, l.rateKey(key), limit)
		})
		if err == nil {
			l.redisAnswered(ctx)
			return l.rateAnswered(key, perMinute, start, res, 0), nil
		}
		l.redisFailed(ctx, err)
	}
	d := l.local.allow(key, perMinute, l.now())
	l.metrics.count(kindRequest, d.Allowed, true)
	return d, nil
}

// rateAnswered turns Redis's GCRA answer, asked at start, into a Decision.
// held is how many units of the answer a lease keeps unspent.
func (l *Limiter) rateAnswered(key string, perMinute int, start time.Time, res *redis_rate.Result, held int) Decision {
	d := Decision{
		Allowed:    res.Allowed > 0,
		Limit:      perMinute,
		Remaining:  max(res.Remaining, 0),
		ResetAfter: max(res.ResetAfter, 0),
	}
	if !d.Allowed {
		d.RetryAfter = max(res.RetryAfter, 0)
	}
	// Mirror the shared state so that a fallback starts from it rather
	// than from a full bucket, and so that Refused knows it.
	l.local.seedRate(key, start, d.ResetAfter)
	if held > 0 {
		emission := max(time.Minute/time.Duration(perMinute), 1)
		d.Remaining += held
		d.ResetAfter = max(d.ResetAfter-time.Duration(held)*emission, emission)
	}
	l.metrics.count(kindRequest, d.Allowed, false)
	return d
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
		ttl := quotaTTL(untilEnd)
		vals, err := call(ctx, l, func(ctx context.Context) ([]int64, error) {
			return quotaScript.Run(ctx, l.rdb, []string{l.quotaKey(key, now)}, perDay, ttl).Int64Slice()
		})
		if err == nil && len(vals) != 2 {
			err = fmt.Errorf("quota script returned %d values; want 2", len(vals))
		}
		if err == nil {
			l.redisAnswered(ctx)
			return l.quotaAnswered(key, perDay, now, vals[0] == 1, int(vals[1])), nil
		}
		l.redisFailed(ctx, err)
	}
	allowed, count := l.local.allowExecution(key, perDay, now)
	d := quotaDecision(allowed, perDay, count, untilNextDay(now), true)
	l.metrics.count(kindExecution, d.Allowed, true)
	return d, nil
}

// quotaAnswered turns Redis's quota answer for now's UTC day into a Decision.
func (l *Limiter) quotaAnswered(key string, perDay int, now time.Time, allowed bool, count int) Decision {
	l.local.seedQuota(key, now, count)
	d := quotaDecision(allowed, perDay, count, untilNextDay(now), false)
	l.metrics.count(kindExecution, d.Allowed, false)
	return d
}

// AllowExecute counts one execute request in one Redis round trip: the
// request against key's per-minute rate, as Allow does, and only if the
// rate admits it, the execution against key's daily quota, as
// AllowExecution does. A request refused by the rate is not counted against
// the quota (execution is then the zero Decision); a request refused by the
// quota was counted against the rate. The fallback decides the same way.
// A hot key's executes are mostly answered from a lease, without Redis
// (see the package comment).
func (l *Limiter) AllowExecute(ctx context.Context, key string, perMinute, perDay int) (request, execution Decision, err error) {
	if key == "" || perMinute <= 0 || perDay <= 0 {
		return Decision{}, Decision{}, fmt.Errorf("%w: AllowExecute(%q, %d, %d)", ErrInvalidArgument, key, perMinute, perDay)
	}
	now := l.now().UTC()
	p := fetchPlan{units: 1}
	// Limits that allow no lease larger than a unit (most keys') skip the
	// lease table and its demand count altogether.
	if l.leases != nil && !l.closed.Load() && l.leases.size(math.MaxInt/2, perMinute, perDay) > 1 {
		var done bool
		request, execution, p, done = l.fromLease(ctx, key, perMinute, perDay, now)
		if done {
			return request, execution, nil
		}
	}
	var kept lease
	if p.entry != nil {
		// Whatever happens, the executes waiting for this fetch wake.
		defer func() { l.stored(p, key, kept) }()
	}
	if l.useRedis() {
		ttl := quotaTTL(untilNextDay(now))
		qk := l.quotaKey(key, now)
		// KEYS[3] and [4] matter only with a give-back (another day's
		// counter, the give-back's marker); otherwise they repeat KEYS[2]
		// and stay empty.
		keys := []string{redisRatePrefix + l.rateKey(key), qk, qk, ""}
		if p.back.tokens > 0 {
			keys[2], keys[3] = l.quotaKey(key, dayStart(p.back.day)), l.backMarker()
		}
		l.executeCalls.Add(1)
		res, err := call(ctx, l, func(ctx context.Context) (executeResult, error) {
			return runExecuteScript(ctx, l.rdb, keys, perMinute, perDay, ttl, p.units, p.back)
		})
		if err == nil {
			l.redisAnswered(ctx)
			if p.back.tokens > 0 {
				l.metrics.leaseReturned.Add(float64(p.back.tokens))
			}
			// The units granted beyond this request's are held, not spent:
			// its Decisions say where the key would stand without them.
			held := max(res.units-1, 0)
			request = l.rateAnswered(key, perMinute, now, &res.rate, held)
			if request.Allowed {
				l.local.seedQuota(key, now, res.count)
				execution = quotaDecision(res.quotaAllowed, perDay, res.count-held, untilNextDay(now), false)
				l.metrics.count(kindExecution, execution.Allowed, false)
			}
			if held > 0 && p.entry != nil {
				kept = lease{
					tokens:    held,
					perMinute: perMinute,
					perDay:    perDay,
					day:       utcDay(now),
					expires:   now.Add(l.leases.window),
					tat:       now.Add(res.rate.ResetAfter),
					remaining: max(res.rate.Remaining, 0),
					count:     res.count,
				}
			}
			return request, execution, nil
		}
		l.redisFailed(ctx, err)
	}
	if p.back.tokens > 0 {
		l.metrics.leaseLost.Add(float64(p.back.tokens))
	}
	request, counted, allowed, count := l.local.allowExecute(key, perMinute, perDay, now)
	l.metrics.count(kindRequest, request.Allowed, true)
	if counted {
		execution = quotaDecision(allowed, perDay, count, untilNextDay(now), true)
		l.metrics.count(kindExecution, execution.Allowed, true)
	}
	return request, execution, nil
}

// Refused reports a refusal of key's next request that the Limiter can
// already tell, without counting anything or calling Redis: from the last
// answer Redis gave this replica about key (or, while Redis is down, from
// the fallback's own count). A refusal leaves GCRA's state as it was, and
// that answer is recorded as of the moment before it was asked, so Redis's
// state can only be further along: what Refused refuses now, Redis would
// refuse now too (only a Redis that lost its data would not). When Refused
// says false, count the request with Allow or AllowExecute.
//
// The execute handler uses it to refuse a key over its rate before reading
// the request's body, and so before any work the body would cost.
//
// Leases keep it exact: Redis's answer counted the units this replica
// holds, but they are paid for, so while it holds any Refused says false;
// and Redis takes units back only in ways that leave every earlier
// refusal standing (see giveBackLua).
func (l *Limiter) Refused(key string, perMinute int) (Decision, bool) {
	if key == "" || perMinute <= 0 {
		return Decision{}, false
	}
	if l.leases != nil && l.leases.holds(key) {
		return Decision{}, false
	}
	d, ok := l.local.refused(key, perMinute, l.now(), l.rdb == nil || l.down.Load())
	if ok {
		l.metrics.count(kindRequest, false, d.Local)
	}
	return d, ok
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
		_, err := call(context.Background(), l, func(ctx context.Context) (struct{}, error) {
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

// executeScript is AllowExecute's one round trip: GCRA as in Allow, then,
// only if that admits the request, the quota as in quotaScript; for a
// lease, up to ARGV[6] units at once, as many as both admit.
//
// The GCRA part is go-redis/redis_rate v10's allowN script
// (github.com/go-redis/redis_rate, Copyright (c) 2013 The
// github.com/go-redis/redis_rate Authors, BSD-2-Clause; redis_rate credits
// rwz/redis-gcra's perform_gcra_ratelimit.lua, Copyright (c) 2017 Pavel
// Pravosud) for a cost of 1: it must keep allowN's arithmetic, key and
// stored TAT format, since redis_rate's Allow counts the other routes'
// requests in the same bucket. A request it admits may take more units:
// each one more emission interval on the TAT, as long as the TAT stays
// within the burst (the request's own unit admitted, floor(remaining) more
// fit) and the quota has them. With one unit asked for, it is allowN's
// answer exactly; a quota refusal counts the request's one unit against
// the rate, as before leases.
//
// Before that, it may return an ended lease's units (give_back), so that
// they can be granted again in the same round trip.
//
// KEYS[1] the GCRA key, KEYS[2] the day's quota counter, KEYS[3] the
// counter of the day the returned lease came from, KEYS[4] the give-back's
// marker (see giveBackLua; empty without one); ARGV[1] burst, ARGV[2]
// rate, ARGV[3] period in seconds, ARGV[4] the quota, ARGV[5] the
// counter's TTL in seconds, ARGV[6] the most units to grant, ARGV[7] units
// to give back (0: none), ARGV[8] their rate per period. Returns {allowed,
// remaining, retry_after, reset_after} as allowN does (the two durations
// as strings of seconds; remaining and reset_after counting every unit
// granted), then {quota_allowed (1|0, or -1 when the rate refused and the
// quota was not consulted), the day's count after this call, the units
// granted (0 on a refusal), 1 when the rate took the given-back units}.
//
// The keys are named by the caller, as a script must, and live on one
// Redis; a Redis Cluster would need them in one hash slot.
var executeScript = redis.NewScript(`
redis.replicate_commands()
` + giveBackLua + `
local rate_limit_key = KEYS[1]
local burst = ARGV[1]
local rate = ARGV[2]
local period = ARGV[3]

local jan_1_2017 = 1483228800
local now = redis.call("TIME")
now = (now[1] - jan_1_2017) + (now[2] / 1000000)

local back = tonumber(ARGV[7])
local back_rate = 0
if back > 0 and first_time(KEYS[4]) then
  back_rate = give_back(rate_limit_key, KEYS[3], back, tonumber(ARGV[8]), tonumber(period), now)
end

local emission_interval = period / rate
local increment = emission_interval
local burst_offset = emission_interval * burst

local tat = redis.call("GET", rate_limit_key)

if not tat then
  tat = now
else
  tat = tonumber(tat)
end

tat = math.max(tat, now)

local new_tat = tat + increment
local allow_at = new_tat - burst_offset

local diff = now - allow_at
local remaining = diff / emission_interval

if remaining < 0 then
  local reset_after = tat - now
  local retry_after = diff * -1
  return {0, 0, tostring(retry_after), tostring(reset_after), -1, 0, 0, back_rate}
end

local units = math.min(tonumber(ARGV[6]), math.floor(remaining) + 1)
local n = tonumber(redis.call("GET", KEYS[2]) or "0")
local quota = tonumber(ARGV[4])
if n >= quota then
  units = 1
else
  units = math.min(units, quota - n)
end

new_tat = tat + units * increment
remaining = remaining - (units - 1)
local reset_after = new_tat - now
if reset_after > 0 then
  redis.call("SET", rate_limit_key, new_tat, "EX", math.ceil(reset_after))
end

if n >= quota then
  return {1, remaining, tostring(-1), tostring(reset_after), 0, n, 0, back_rate}
end
n = redis.call("INCRBY", KEYS[2], units)
if n == units or redis.call("TTL", KEYS[2]) < 0 then
  redis.call("EXPIRE", KEYS[2], ARGV[5])
end
return {1, remaining, tostring(-1), tostring(reset_after), 1, n, units, back_rate}
`)

type executeResult struct {
	rate         redis_rate.Result
	quotaAllowed bool
	count        int
	// units granted: 1 for this request, more for a lease.
	units int
}

func runExecuteScript(ctx context.Context, rdb *redis.Client, keys []string, perMinute, perDay int, ttl int64, units int, back giveBack) (executeResult, error) {
	// ARGV[8] is read only when there are units to give back.
	v, err := executeScript.Run(ctx, rdb, keys, perMinute, perMinute, time.Minute.Seconds(), perDay, ttl,
		units, back.tokens, back.perMinute).Slice()
	if err != nil {
		return executeResult{}, fmt.Errorf("execute script: %w", err)
	}
	res, err := parseExecuteResult(v)
	if err != nil {
		return executeResult{}, fmt.Errorf("execute script: %w", err)
	}
	return res, nil
}

func parseExecuteResult(v []any) (executeResult, error) {
	if len(v) != 8 {
		return executeResult{}, fmt.Errorf("returned %d values; want 8", len(v))
	}
	var ints [5]int64 // allowed, remaining, quota_allowed, count, units
	for i, at := range [5]int{0, 1, 4, 5, 6} {
		n, ok := v[at].(int64)
		if !ok {
			return executeResult{}, fmt.Errorf("value %d is %T; want an integer", at+1, v[at])
		}
		ints[i] = n
	}
	var secs [2]float64 // retry_after, reset_after
	for i, at := range [2]int{2, 3} {
		str, ok := v[at].(string)
		if !ok {
			return executeResult{}, fmt.Errorf("value %d is %T; want a string", at+1, v[at])
		}
		f, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return executeResult{}, fmt.Errorf("value %d: %w", at+1, err)
		}
		secs[i] = f
	}
	return executeResult{
		rate: redis_rate.Result{
			Allowed:    int(ints[0]),
			Remaining:  int(ints[1]),
			RetryAfter: seconds(secs[0]),
			ResetAfter: seconds(secs[1]),
		},
		quotaAllowed: ints[2] == 1,
		count:        int(ints[3]),
		units:        int(ints[4]),
	}, nil
}

// seconds is redis_rate's dur: -1 stays -1 ("not applicable").
func seconds(f float64) time.Duration {
	if f == -1 {
		return -1
	}
	return time.Duration(f * float64(time.Second))
}

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

// quotaTTL is the day's counter's expiry in whole seconds: until the UTC
// day ends, plus quotaGrace.
func quotaTTL(untilEnd time.Duration) int64 {
	return int64((untilEnd + quotaGrace + time.Second - 1) / time.Second)
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

// call runs fn with a deadline of CallTimeout. A client that honours the
// deadline on its socket is called directly; any other through guarded.
func call[T any](ctx context.Context, l *Limiter, fn func(context.Context) (T, error)) (T, error) {
	if !l.direct {
		return guarded(ctx, l.cfg.CallTimeout, fn)
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.CallTimeout)
	defer cancel()
	return fn(ctx)
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
