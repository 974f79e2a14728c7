package ratelimit

import (
	"sync"
	"time"
)

// local is the in-process fallback: the same GCRA as redis_rate's script
// and a per-UTC-day counter, per key. While Redis is up it mirrors Redis's
// answers (seed*), so an outage continues from the shared state instead of
// handing every key a fresh burst and a fresh daily quota.
type local struct {
	mu      sync.Mutex
	maxKeys int
	// tat is each key's GCRA theoretical arrival time. An entry whose tat
	// has passed is a full bucket, the same as no entry, so idle keys are
	// dropped without changing any decision.
	tat   map[string]rateEntry
	quota map[string]dayCount
	// nextSweep spaces full sweeps so memory falls back after a flood of
	// keys even when the maps never reach maxKeys.
	nextSweep time.Time
}

type rateEntry struct {
	tat time.Time
	// shared: the entry mirrors an answer of Redis, not a count of the
	// fallback's own (see refused).
	shared bool
}

type dayCount struct {
	day   int64 // days since the Unix epoch, UTC
	count int
}

const sweepEvery = time.Minute

func newLocal(maxKeys int) *local {
	return &local{
		maxKeys: maxKeys,
		tat:     make(map[string]rateEntry),
		quota:   make(map[string]dayCount),
	}
}

// allow is redis_rate's allowN script with cost 1 and burst == rate.
func (m *local) allow(key string, perMinute int, now time.Time) Decision {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maintain(now)
	return m.allowLocked(key, perMinute, now)
}

func (m *local) allowLocked(key string, perMinute int, now time.Time) Decision {
	tat, d := m.gcra(key, perMinute, now)
	if !d.Allowed {
		return d
	}
	m.tat[key] = rateEntry{tat: tat}
	m.bound(now)
	return d
}

// gcra decides one request against key's recorded state and returns the
// state an admission would record; it records nothing. Called with mu held.
func (m *local) gcra(key string, perMinute int, now time.Time) (time.Time, Decision) {
	emission := max(time.Minute/time.Duration(perMinute), 1)
	burstOffset := emission * time.Duration(perMinute)

	tat := m.tat[key].tat
	if tat.Before(now) {
		tat = now
	}
	newTat := tat.Add(emission)
	diff := now.Sub(newTat.Add(-burstOffset))
	if diff < 0 {
		return tat, Decision{
			Limit:      perMinute,
			ResetAfter: tat.Sub(now),
			RetryAfter: -diff,
			Local:      true,
		}
	}
	return newTat, Decision{
		Allowed:    true,
		Limit:      perMinute,
		Remaining:  int(diff / emission),
		ResetAfter: newTat.Sub(now),
		Local:      true,
	}
}

// refused is allow's refusal without counting anything: it says whether
// the next request of key would be refused now. It trusts the fallback's
// own counts only when trustLocal, the fallback deciding (Decision.Local):
// they may run ahead of Redis's, which decides again once it answers.
func (m *local) refused(key string, perMinute int, now time.Time, trustLocal bool) (Decision, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.tat[key]
	if !ok || !e.tat.After(now) || (!e.shared && !trustLocal) {
		return Decision{}, false
	}
	_, d := m.gcra(key, perMinute, now)
	if d.Allowed {
		return Decision{}, false
	}
	d.Local = trustLocal
	return d, true
}

// allowExecute is allow and, only if it admits the request,
// allowExecution, under one lock as Redis runs the one script: counted
// reports whether the execution was counted against the quota at all.
func (m *local) allowExecute(key string, perMinute, perDay int, now time.Time) (req Decision, counted, allowed bool, count int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maintain(now)
	req = m.allowLocked(key, perMinute, now)
	if !req.Allowed {
		return req, false, false, 0
	}
	allowed, count = m.allowExecutionLocked(key, perDay, now)
	return req, true, allowed, count
}

// allowExecution counts one execution against key's quota for now's UTC
// day unless the quota is reached. It returns the day's count after the call.
func (m *local) allowExecution(key string, perDay int, now time.Time) (bool, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maintain(now)
	return m.allowExecutionLocked(key, perDay, now)
}

func (m *local) allowExecutionLocked(key string, perDay int, now time.Time) (bool, int) {
	day := utcDay(now)
	c := m.quota[key]
	if c.day != day {
		c = dayCount{day: day}
	}
	if c.count >= perDay {
		return false, c.count
	}
	c.count++
	m.quota[key] = c
	m.bound(now)
	return true, c.count
}

// seedRate records Redis's view of key: its bucket is full again after
// resetAfter. now must be taken before the call to Redis, so that the
// record never runs ahead of Redis's state (refused relies on it).
func (m *local) seedRate(key string, now time.Time, resetAfter time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maintain(now)
	if resetAfter <= 0 {
		delete(m.tat, key)
		return
	}
	m.tat[key] = rateEntry{tat: now.Add(resetAfter), shared: true}
	m.bound(now)
}

// seedQuota records Redis's count of key's executions on now's UTC day.
func (m *local) seedQuota(key string, now time.Time, count int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maintain(now)
	m.quota[key] = dayCount{day: utcDay(now), count: count}
	m.bound(now)
}

// gaveBack records that tokens of a lease of key (at perMinute, from the
// quota of day) went back to Redis: the day's count is that much lower,
// and when the rate took them, the TAT that many emission intervals
// earlier. Only records of Redis's state change; the fallback's own counts
// were never raised by a lease.
func (m *local) gaveBack(key string, now time.Time, perMinute int, day int64, tokens int, rate bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.tat[key]; ok && e.shared && rate {
		emission := max(time.Minute/time.Duration(perMinute), 1)
		e.tat = e.tat.Add(-time.Duration(tokens) * emission)
		if e.tat.After(now) {
			m.tat[key] = e
		} else {
			delete(m.tat, key)
		}
	}
	if c, ok := m.quota[key]; ok && c.day == day {
		c.count = max(c.count-tokens, 0)
		m.quota[key] = c
	}
}

// maintain sweeps both maps once per sweepEvery. Called with mu held.
func (m *local) maintain(now time.Time) {
	if now.Before(m.nextSweep) {
		return
	}
	m.nextSweep = now.Add(sweepEvery)
	m.sweep(now)
}

// bound keeps each map at most maxKeys long after an insert: first by
// dropping expired entries, then, under a flood of live keys, arbitrary ones
// (Go's map order) down to 90%, so the O(n) pass is not paid on every
// insert. Dropping a live entry forgets that key's use: a lesser harm than
// memory without bound. Called with mu held.
func (m *local) bound(now time.Time) {
	if len(m.tat) <= m.maxKeys && len(m.quota) <= m.maxKeys {
		return
	}
	m.sweep(now)
	target := m.maxKeys - m.maxKeys/10
	if len(m.tat) > m.maxKeys {
		for k := range m.tat {
			if len(m.tat) <= target {
				break
			}
			delete(m.tat, k)
		}
	}
	if len(m.quota) > m.maxKeys {
		for k := range m.quota {
			if len(m.quota) <= target {
				break
			}
			delete(m.quota, k)
		}
	}
}

func (m *local) sweep(now time.Time) {
	for k, e := range m.tat {
		if !e.tat.After(now) {
			delete(m.tat, k)
		}
	}
	day := utcDay(now)
	for k, c := range m.quota {
		if c.day != day {
			delete(m.quota, k)
		}
	}
}

func utcDay(t time.Time) int64 {
	return t.Unix() / 86400
}
