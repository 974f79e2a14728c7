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
	tat   map[string]time.Time
	quota map[string]dayCount
	// nextSweep spaces full sweeps so memory falls back after a flood of
	// keys even when the maps never reach maxKeys.
	nextSweep time.Time
}

type dayCount struct {
	day   int64 // days since the Unix epoch, UTC
	count int
}

const sweepEvery = time.Minute

func newLocal(maxKeys int) *local {
	return &local{
		maxKeys: maxKeys,
		tat:     make(map[string]time.Time),
		quota:   make(map[string]dayCount),
	}
}

// allow is redis_rate's allowN script with cost 1 and burst == rate.
func (m *local) allow(key string, perMinute int, now time.Time) Decision {
	emission := max(time.Minute/time.Duration(perMinute), 1)
	burstOffset := emission * time.Duration(perMinute)

	m.mu.Lock()
	defer m.mu.Unlock()
	m.maintain(now)

	tat, ok := m.tat[key]
	if !ok || tat.Before(now) {
		tat = now
	}
	newTat := tat.Add(emission)
	diff := now.Sub(newTat.Add(-burstOffset))
	if diff < 0 {
		return Decision{
			Limit:      perMinute,
			ResetAfter: tat.Sub(now),
			RetryAfter: -diff,
			Local:      true,
		}
	}
	m.tat[key] = newTat
	m.bound(now)
	return Decision{
		Allowed:    true,
		Limit:      perMinute,
		Remaining:  int(diff / emission),
		ResetAfter: newTat.Sub(now),
		Local:      true,
	}
}

// allowExecution counts one execution against key's quota for now's UTC
// day unless the quota is reached. It returns the day's count after the call.
func (m *local) allowExecution(key string, perDay int, now time.Time) (bool, int) {
	day := utcDay(now)

	m.mu.Lock()
	defer m.mu.Unlock()
	m.maintain(now)

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
// resetAfter.
func (m *local) seedRate(key string, now time.Time, resetAfter time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maintain(now)
	if resetAfter <= 0 {
		delete(m.tat, key)
		return
	}
	m.tat[key] = now.Add(resetAfter)
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
	for k, tat := range m.tat {
		if !tat.After(now) {
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
