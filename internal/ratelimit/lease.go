package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	defaultLeaseWindow = 100 * time.Millisecond

	// maxLease bounds the units one grant hands out, and so what one
	// replica may hold of a key's rate and quota at once.
	maxLease = 64
	// hotPerWindow is how many executes a key must make in one lease window
	// before it is leased more than one unit: below it the saving is small
	// and every call stays exact, as without leases.
	hotPerWindow = 4
	// quotaPerLeaseUnit: a lease holds at most one unit per quotaPerLeaseUnit
	// of the daily quota, so that a small quota is never held back by
	// replicas from the requests that would use it.
	quotaPerLeaseUnit = 1000
	// maxWaits bounds the fetches an execute waits for before it asks
	// Redis itself.
	maxWaits = 4
	// giveBackBatch is how many leases one give-back round trip returns.
	giveBackBatch = 64
	// purgeEvery is how many sweeps apart idle keys are forgotten.
	purgeEvery = 16

	leaseShards = 64
)

// leaseTable holds this replica's leases and each executing key's recent
// demand, which sizes the next lease.
type leaseTable struct {
	window      time.Duration
	seed        maphash.Seed
	maxPerShard int
	shards      [leaseShards]leaseShard

	mu sync.Mutex // guards the rest
	// leased: entries that got tokens since the last sweep, the only ones a
	// sweep must look at for expired leases.
	leased map[*leaseEntry]string
	// pending: tokens taken out of a lease that no sweep will find again.
	pending []giveBack
	started bool // the sweeper runs
	closed  bool
	// running mirrors started for the execute path, which asks every time.
	running atomic.Bool
	sweeps  int
	stop    chan struct{}
	stopped chan struct{}

	// id and backs name give-backs uniquely across replicas (backMarker).
	id    string
	backs atomic.Uint64
}

type leaseShard struct {
	mu sync.RWMutex
	m  map[string]*leaseEntry
}

// leaseEntry is one key's lease and demand. Everything is guarded by mu.
type leaseEntry struct {
	mu sync.Mutex
	// dead: the entry left its shard (purged); whoever still holds a
	// pointer to it must look the key up again.
	dead bool

	// The key's executes in the current window (cur, since winStart) and
	// in the one before (prev); lastSeen is the last execute.
	winStart, lastSeen time.Time
	cur, prev          int

	// fetching is the grant in flight for the key, if any. reserved: units
	// of the lease kept for executes that waited for a fetch and have not
	// run since it ended.
	fetching *fetch
	reserved int

	lease lease
}

// lease is a number of units of one key's rate and quota that Redis has
// already counted, with Redis's answer when it granted them.
type lease struct {
	tokens            int
	perMinute, perDay int
	day               int64 // the UTC day whose quota the units came from
	expires           time.Time
	// tat is Redis's GCRA TAT after the grant, on this replica's clock as
	// local.seedRate records it; remaining and count are Redis's rate
	// remaining and day's count after the grant, every unit taken.
	tat       time.Time
	remaining int
	count     int
}

// giveBack is the unspent remainder of a lease, to return to Redis.
type giveBack struct {
	key       string
	perMinute int
	day       int64
	tokens    int
}

func newLeaseTable(window time.Duration, maxKeys int) *leaseTable {
	var id [8]byte
	rand.Read(id[:]) // never fails (crypto/rand)
	t := &leaseTable{
		id:          hex.EncodeToString(id[:]),
		window:      window,
		seed:        maphash.MakeSeed(),
		maxPerShard: max(maxKeys/leaseShards, 1),
		leased:      make(map[*leaseEntry]string),
		stop:        make(chan struct{}),
		stopped:     make(chan struct{}),
	}
	for i := range t.shards {
		t.shards[i].m = make(map[string]*leaseEntry)
	}
	return t
}

func (t *leaseTable) shard(key string) *leaseShard {
	return &t.shards[maphash.String(t.seed, key)%leaseShards]
}

// lookup returns key's entry, locked; a new one if create and there is
// room, else nil.
func (t *leaseTable) lookup(key string, create bool) *leaseEntry {
	s := t.shard(key)
	for {
		s.mu.RLock()
		e := s.m[key]
		s.mu.RUnlock()
		if e == nil {
			if !create {
				return nil
			}
			s.mu.Lock()
			if e = s.m[key]; e == nil {
				// A flood of keys beyond the bound goes unleased (one Redis
				// call each, as without leases) rather than unbounded.
				if len(s.m) >= t.maxPerShard {
					s.mu.Unlock()
					return nil
				}
				e = &leaseEntry{}
				s.m[key] = e
			}
			s.mu.Unlock()
		}
		e.mu.Lock()
		if !e.dead {
			return e
		}
		e.mu.Unlock()
	}
}

// holds reports whether this replica holds tokens of key's rate, expired
// or not (an expired lease's are on their way back to Redis).
func (t *leaseTable) holds(key string) bool {
	e := t.lookup(key, false)
	if e == nil {
		return false
	}
	defer e.mu.Unlock()
	return e.lease.tokens > 0
}

// seen counts one execute of the key at now. Called with e.mu held.
func (e *leaseEntry) seen(now time.Time, window time.Duration) {
	if since := now.Sub(e.winStart); since >= window || since < 0 {
		e.prev = 0
		if since < 2*window && since >= 0 {
			e.prev = e.cur
		}
		e.cur = 0
		e.winStart = now
	}
	e.cur++
	e.lastSeen = now
}

// size is how many units to ask Redis for: one, unless the key made at
// least hotPerWindow executes in the last window; then twice those (what
// the next window may use, and room to grow), within the key's rate per
// window (so that a lease never holds more than Redis refills while it
// lives), a thousandth of its quota, and maxLease.
func (t *leaseTable) size(prev, perMinute, perDay int) int {
	if prev < hotPerWindow {
		return 1
	}
	perWindow := int(int64(perMinute) * int64(t.window) / int64(time.Minute))
	return max(1, min(2*prev, maxLease, perWindow, perDay/quotaPerLeaseUnit))
}

// fetch is a grant in flight; its fields are guarded by the entry's mu.
type fetch struct {
	done    chan struct{} // closed once the grant is stored
	waiting int           // executes waiting for it
	leased  bool          // it kept units beyond its own execute's
}

// take empties the lease and returns what it held. Called with e.mu held.
func (e *leaseEntry) take(key string) giveBack {
	ls := e.lease
	e.lease = lease{}
	e.reserved = 0
	return giveBack{key: key, perMinute: ls.perMinute, day: ls.day, tokens: ls.tokens}
}

// spend answers one execute from the lease. Called with e.mu held and
// tokens left.
func (ls *lease) spend(now time.Time) (request, execution Decision) {
	ls.tokens--
	held := ls.tokens
	emission := max(time.Minute/time.Duration(ls.perMinute), 1)
	request = Decision{
		Allowed: true,
		Limit:   ls.perMinute,
		// The units still held are not spent yet: where the key would stand
		// had Redis granted only what this replica has admitted.
		Remaining:  ls.remaining + held,
		ResetAfter: max(ls.tat.Add(-time.Duration(held)*emission).Sub(now), emission),
	}
	execution = quotaDecision(true, ls.perDay, ls.count-held, untilNextDay(now), false)
	return request, execution
}

// fetchPlan is what an execute that found no usable lease asks Redis.
type fetchPlan struct {
	units int // at most; 1 for a plain execute
	// entry, when units > 1: the key's entry, whose fetch this is; its
	// waiters wake when stored is called.
	entry *leaseEntry
	back  giveBack // a lease to return in the same round trip, if tokens > 0
}

// fromLease answers an execute from key's lease when it can (done). When
// it cannot, it says what to ask Redis. While another execute of the key
// fetches a lease, it waits for that fetch, rather than every execute of a
// hot key calling Redis at once; the fetch keeps a unit for each execute
// that waited for it, so that executes which happen to run first do not
// spend them all. If the fetch leased nothing (a refusal, or a key at its
// rate, granted a unit at a time), or maxWaits fetches left nothing for
// it, it asks Redis itself.
func (l *Limiter) fromLease(ctx context.Context, key string, perMinute, perDay int, now time.Time) (request, execution Decision, p fetchPlan, done bool) {
	t := l.leases
	p.units = 1
	e := t.lookup(key, true)
	if e == nil {
		return Decision{}, Decision{}, p, false
	}
	if !t.running.Load() {
		t.startSweeper(l)
	}
	e.seen(now, t.window)
	day := utcDay(now)
	var waited *fetch
	waits := 0
	for {
		ls := &e.lease
		if ls.tokens > 0 && now.Before(ls.expires) && ls.perMinute == perMinute && ls.perDay == perDay && ls.day == day {
			free := ls.tokens > e.reserved
			if waited != nil && e.reserved > 0 {
				e.reserved--
				free = true
			}
			if free {
				request, execution = ls.spend(now)
				e.mu.Unlock()
				l.metrics.count(kindRequest, true, false)
				l.metrics.count(kindExecution, true, false)
				l.metrics.leaseExecutes.Inc()
				l.returnLater(p.back)
				return request, execution, p, true
			}
		} else if ls.tokens > 0 {
			// Expired, or the key's limits or day changed: the round trip
			// that follows returns it (or the sweeper, if this execute
			// already has one to return).
			l.returnLater(p.back)
			p.back = e.take(key)
		}
		units := t.size(e.prev, perMinute, perDay)
		if units <= 1 || e.dead || l.closed.Load() || ctx.Err() != nil || (waited != nil && !waited.leased) {
			break
		}
		if e.fetching == nil {
			e.fetching = &fetch{done: make(chan struct{})}
			p.units, p.entry = units, e
			break
		}
		if waits == maxWaits {
			break
		}
		// Not abandoned when ctx ends: the fetch ends within CallTimeout,
		// and a waiter that left would strand the unit kept for it.
		waited = e.fetching
		waited.waiting++
		e.mu.Unlock()
		<-waited.done
		waits++
		e.mu.Lock()
	}
	e.mu.Unlock()
	if waits > 0 && p.back.tokens == 0 && !l.down.Load() {
		// The fetch this execute waited for left nothing for it. If Redis's
		// last answer already refuses the key's rate, Redis would refuse it
		// too (see Refused), and counts nothing for such a refusal.
		if d, ok := l.local.refused(key, perMinute, l.now(), false); ok {
			l.metrics.count(kindRequest, false, false)
			return d, Decision{}, p, true
		}
	}
	return Decision{}, Decision{}, p, false
}

// stored ends the fetch of p.entry: it keeps ls when it holds units, a
// unit of them for each execute waiting, and wakes those.
func (l *Limiter) stored(p fetchPlan, key string, ls lease) {
	t := l.leases
	e := p.entry
	e.mu.Lock()
	f := e.fetching
	var back []giveBack
	kept := false
	if ls.tokens > 0 {
		cur := &e.lease
		switch {
		case e.dead || l.closed.Load():
			back = append(back, giveBack{key: key, perMinute: ls.perMinute, day: ls.day, tokens: ls.tokens})
		case cur.tokens > 0 && cur.perMinute == ls.perMinute && cur.perDay == ls.perDay && cur.day == ls.day:
			// Units kept for the waiters of an earlier fetch that have not
			// run yet: one lease, expiring with the older, described by
			// Redis's latest answer, which counted both.
			tokens, expires := cur.tokens+ls.tokens, cur.expires
			*cur = ls
			cur.tokens, cur.expires = tokens, expires
			kept = true
		default:
			if cur.tokens > 0 {
				back = append(back, e.take(key))
			}
			e.lease, kept = ls, true
		}
		if kept {
			e.reserved = min(e.reserved+f.waiting, e.lease.tokens)
		}
	}
	f.leased = kept
	close(f.done)
	e.fetching = nil
	e.mu.Unlock()

	t.mu.Lock()
	if kept {
		t.leased[e] = key
	}
	t.mu.Unlock()
	l.returnLater(back...)
}

// returnLater has the sweeper return back (at once, if it has stopped).
func (l *Limiter) returnLater(back ...giveBack) {
	n := 0
	for _, b := range back {
		if b.tokens > 0 {
			back[n] = b
			n++
		}
	}
	if n == 0 {
		return
	}
	t := l.leases
	t.mu.Lock()
	closed := t.closed
	if !closed {
		t.pending = append(t.pending, back[:n]...)
	}
	t.mu.Unlock()
	if closed {
		l.giveBack(context.Background(), back[:n])
	}
}

// startSweeper starts the goroutine that returns expired leases and
// forgets idle keys, once, unless the Limiter is closed.
func (t *leaseTable) startSweeper(l *Limiter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.started || t.closed {
		return
	}
	t.started = true
	t.running.Store(true)
	go func() {
		defer close(t.stopped)
		tick := time.NewTicker(max(t.window/2, time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				l.sweepLeases(false)
			case <-t.stop:
				return
			}
		}
	}()
}

// sweepLeases returns to Redis the tokens of every expired lease (of every
// lease, when all), and now and then forgets keys idle for two windows,
// whose demand no longer sizes anything.
func (l *Limiter) sweepLeases(all bool) error {
	t := l.leases
	now := l.now()

	t.mu.Lock()
	t.sweeps++
	purge := all || t.sweeps%purgeEvery == 0
	if !purge && len(t.pending) == 0 && len(t.leased) == 0 {
		// Nothing to return or forget: an idle replica's sweep costs no
		// allocation.
		t.mu.Unlock()
		return nil
	}
	back := t.pending
	t.pending = nil
	leased := t.leased
	t.leased = make(map[*leaseEntry]string)
	t.mu.Unlock()

	if all {
		leased = make(map[*leaseEntry]string)
		for i := range t.shards {
			s := &t.shards[i]
			s.mu.RLock()
			for k, e := range s.m {
				leased[e] = k
			}
			s.mu.RUnlock()
		}
	}
	var still []*leaseEntry
	for e, key := range leased {
		e.mu.Lock()
		switch {
		case e.lease.tokens == 0:
		case all || !now.Before(e.lease.expires):
			back = append(back, e.take(key))
		default:
			still = append(still, e)
		}
		e.mu.Unlock()
	}
	if len(still) > 0 {
		t.mu.Lock()
		for _, e := range still {
			t.leased[e] = leased[e]
		}
		t.mu.Unlock()
	}
	if purge {
		for i := range t.shards {
			s := &t.shards[i]
			s.mu.Lock()
			for k, e := range s.m {
				e.mu.Lock()
				if e.lease.tokens == 0 && e.fetching == nil && now.Sub(e.lastSeen) >= 2*t.window {
					e.dead = true
					delete(s.m, k)
				}
				e.mu.Unlock()
			}
			s.mu.Unlock()
		}
	}
	return l.giveBack(context.Background(), back)
}

// Close returns to Redis every token this replica's leases still hold and
// stops the goroutine that returns expired ones. Call it when the replica
// shuts down, or the tokens it holds (a window's worth of its hot keys'
// rates at most) stay counted until the limits refill. Execute decisions
// after Close are made without leases. It returns an error when tokens
// could not be returned; the Limiter remains usable. Close is idempotent.
func (l *Limiter) Close() error {
	t := l.leases
	if t == nil {
		return nil
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	l.closed.Store(true)
	t.running.Store(true) // nothing to start any more
	started := t.started
	t.mu.Unlock()
	if started {
		close(t.stop)
		<-t.stopped
	}
	return l.sweepLeases(true)
}

// giveBack returns unspent lease tokens to Redis, giveBackBatch leases per
// round trip. Tokens that cannot be returned are lost: the replica admits
// less than the limits, never more.
func (l *Limiter) giveBack(ctx context.Context, back []giveBack) error {
	var errs []error
	for len(back) > 0 {
		batch := back[:min(len(back), giveBackBatch)]
		back = back[len(batch):]
		if err := l.giveBackBatch(ctx, batch); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("ratelimit: give back lease tokens: %w", errs[0])
	}
	return nil
}

func (l *Limiter) giveBackBatch(ctx context.Context, batch []giveBack) error {
	tokens := 0
	keys := make([]string, 0, 1+2*len(batch))
	keys = append(keys, l.backMarker())
	args := make([]any, 0, 3*len(batch))
	for _, b := range batch {
		tokens += b.tokens
		keys = append(keys, redisRatePrefix+l.rateKey(b.key), l.quotaKey(b.key, dayStart(b.day)))
		args = append(args, b.tokens, b.perMinute, time.Minute.Seconds())
	}
	if tokens == 0 {
		return nil
	}
	var err error
	if l.down.Load() {
		err = errRedisDown
	} else {
		var returned []int64
		returned, err = call(ctx, l, func(ctx context.Context) ([]int64, error) {
			return giveBackScript.Run(ctx, l.rdb, keys, args...).Int64Slice()
		})
		if err == nil && len(returned) != len(batch) {
			err = fmt.Errorf("give-back script returned %d values; want %d", len(returned), len(batch))
		}
		if err == nil {
			l.redisAnswered(ctx)
			now := l.now()
			for i, b := range batch {
				if returned[i] >= 0 {
					l.local.gaveBack(b.key, now, b.perMinute, b.day, b.tokens, returned[i] == 1)
				}
			}
			l.metrics.leaseReturned.Add(float64(tokens))
			return nil
		}
		l.redisFailed(ctx, err)
	}
	l.metrics.leaseLost.Add(float64(tokens))
	l.log.DebugContext(ctx, "rate limit lease tokens not returned; they stay counted until the limits refill",
		"tokens", tokens, "leases", len(batch), "err", err)
	return err
}

var errRedisDown = errors.New("redis unreachable")

func dayStart(day int64) time.Time {
	return time.Unix(day*86400, 0).UTC()
}

// giveBackLua defines give_back, shared by both scripts: it returns m
// units of a lease to the GCRA key and the day's counter, and says whether
// the rate took them (1) or not (0); and first_time, which says whether a
// give-back's marker key is new. go-redis runs a command again when the
// connection fails after sending it, and a give-back run twice would hand
// its units out twice; a grant run twice only loses the first one's units.
//
// The rate takes them back only while it would admit a request now.
// Refused refuses from Redis's last answer to this replica, sure that
// Redis's TAT can only have moved on since; a give-back is the one thing
// that moves it back. Returned while a request would be admitted anyway,
// units cannot undo a refusal that any answer so far implies: an answer's
// TAT is at most the TAT now, which admits a request now, and so admits
// one at any later time. Returned into an empty bucket, they could; then
// they stay counted and the key refills as if they had been spent. (Empty
// by the lease's rate: a key whose rate was lowered while the lease lived
// may see one give-back relax a refusal Refused made at the new rate, by
// at most the units of that one lease.)
//
// The TAT moves back by m emission intervals, never below now (the key is
// then deleted: a full bucket, as redis_rate reads a missing key). The
// counter goes down by m, never below 0, keeping its expiry.
const giveBackLua = `
local function first_time(marker)
  return redis.call("SET", marker, "1", "NX", "EX", 60)
end

local function give_back(rate_key, quota_key, m, rate, period, now)
  local emission_interval = period / rate
  local burst_offset = emission_interval * rate
  local returned = 0
  local tat = redis.call("GET", rate_key)
  if tat then
    tat = tonumber(tat)
    if math.max(tat, now) + emission_interval - burst_offset <= now then
      local new_tat = tat - m * emission_interval
      if new_tat > now then
        redis.call("SET", rate_key, new_tat, "EX", math.ceil(new_tat - now))
      else
        redis.call("DEL", rate_key)
      end
      returned = 1
    end
  end
  local n = tonumber(redis.call("GET", quota_key) or "0")
  if n > 0 then
    redis.call("DECRBY", quota_key, math.min(m, n))
  end
  return returned
end
`

// giveBackScript returns the unspent tokens of several leases.
//
// KEYS[1] the give-back's marker; KEYS[2i] lease i's GCRA key, KEYS[2i+1]
// its day's counter; ARGV[3i-2] its unspent units, ARGV[3i-1] its rate per
// period, ARGV[3i] the period in seconds. Returns, per lease, 1 when the
// rate took the units back, 0 when not, -1 when the give-back had already
// run.
var giveBackScript = redis.NewScript(`
redis.replicate_commands()
` + giveBackLua + `
local out = {}
if not first_time(KEYS[1]) then
  for i = 1, (#KEYS - 1) / 2 do
    out[i] = -1
  end
  return out
end
local jan_1_2017 = 1483228800
local now = redis.call("TIME")
now = (now[1] - jan_1_2017) + (now[2] / 1000000)
for i = 1, (#KEYS - 1) / 2 do
  out[i] = give_back(KEYS[2*i], KEYS[2*i+1], tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), now)
end
return out
`)

// backMarker names a new give-back's marker key (see giveBackLua).
func (l *Limiter) backMarker() string {
	return l.cfg.Prefix + ":lease-back:" + l.leases.id + ":" + strconv.FormatUint(l.leases.backs.Add(1), 10)
}
