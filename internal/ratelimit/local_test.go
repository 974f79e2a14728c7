package ratelimit

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for the local limiter's arithmetic.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func localOnly(t *testing.T, start time.Time, cfg Config) (*Limiter, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: start}
	l := New(nil, nil, newRegistry(), cfg)
	l.now = clock.now
	return l, clock
}

func TestLocalTenPerMinute(t *testing.T) {
	l := New(nil, nil, newRegistry(), Config{})
	checkTenPerMinute(t, l, "key-a", true)
	if l.Healthy() {
		t.Errorf("local-only Healthy() = true; want false")
	}
}

func TestLocalRefill(t *testing.T) {
	l, clock := localOnly(t, time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC), Config{})
	const limit = 10
	for range limit {
		mustAllow(t, l, "key", limit)
	}
	steps := []struct {
		name          string
		advance       time.Duration
		wantAllowed   bool
		wantRemaining int
		wantRetry     time.Duration
		wantReset     time.Duration
	}{
		{"burst spent", 0, false, 0, 6 * time.Second, time.Minute},
		{"one interval later", 6 * time.Second, true, 0, 0, time.Minute},
		{"at once again", 0, false, 0, 6 * time.Second, time.Minute},
		{"half an interval", 3 * time.Second, false, 0, 3 * time.Second, 57 * time.Second},
		{"full again", time.Minute, true, limit - 1, 0, 6 * time.Second},
	}
	for _, s := range steps {
		clock.advance(s.advance)
		d := mustAllow(t, l, "key", limit)
		if d.Allowed != s.wantAllowed || d.Remaining != s.wantRemaining || d.RetryAfter != s.wantRetry ||
			d.ResetAfter != s.wantReset || !d.Local {
			t.Fatalf("%s: Allow = %+v; want Allowed %v, Remaining %d, RetryAfter %v, ResetAfter %v, Local",
				s.name, d, s.wantAllowed, s.wantRemaining, s.wantRetry, s.wantReset)
		}
	}
}

func TestLocalQuotaDayTurns(t *testing.T) {
	l, clock := localOnly(t, time.Date(2030, 1, 2, 23, 59, 50, 0, time.UTC), Config{})
	const quota = 3
	for i := 1; i <= quota; i++ {
		if d := mustAllowExecution(t, l, "key", quota); !d.Allowed || d.Remaining != quota-i || !d.Local {
			t.Fatalf("AllowExecution #%d = %+v; want allowed locally, Remaining %d", i, d, quota-i)
		}
	}
	for range 3 {
		d := mustAllowExecution(t, l, "key", quota)
		if d.Allowed || d.RetryAfter != 10*time.Second || d.ResetAfter != 10*time.Second || d.Remaining != 0 {
			t.Fatalf("AllowExecution over quota = %+v; want refused, RetryAfter 10s until midnight UTC", d)
		}
	}
	if c := l.local.quota["key"]; c.count != quota {
		t.Errorf("local count after refusals = %d; want %d", c.count, quota)
	}
	clock.advance(10 * time.Second)
	if d := mustAllowExecution(t, l, "key", quota); !d.Allowed || d.Remaining != quota-1 || d.ResetAfter != 24*time.Hour {
		t.Errorf("AllowExecution on the next UTC day = %+v; want allowed, Remaining %d, ResetAfter 24h", d, quota-1)
	}
}

func TestLocalMapsBounded(t *testing.T) {
	const maxKeys = 100
	l, clock := localOnly(t, time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC), Config{MaxLocalKeys: maxKeys})
	for i := range 10 * maxKeys {
		key := fmt.Sprintf("flood-%d", i)
		mustAllow(t, l, key, 10)
		mustAllowExecution(t, l, key, 10)
	}
	if r, q := len(l.local.tat), len(l.local.quota); r > maxKeys || q > maxKeys {
		t.Errorf("after a flood of %d keys: %d rate and %d quota entries; want <= %d each", 10*maxKeys, r, q, maxKeys)
	}

	// Idle keys go: a full bucket, or yesterday's count, is no entry at all.
	clock.advance(24 * time.Hour)
	mustAllow(t, l, "survivor", 10)
	if r, q := len(l.local.tat), len(l.local.quota); r != 1 || q != 0 {
		t.Errorf("a day later: %d rate and %d quota entries; want 1 and 0", r, q)
	}
}

func TestLocalConcurrent(t *testing.T) {
	// A still clock: no refill can blur the count.
	l, _ := localOnly(t, time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC), Config{})
	const limit, quota = 50, 20
	var mu sync.Mutex
	allowed, executed := 0, 0
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				d := mustAllow(t, l, "key", limit)
				e := mustAllowExecution(t, l, "key", quota)
				mu.Lock()
				if d.Allowed {
					allowed++
				}
				if e.Allowed {
					executed++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if allowed != limit || executed != quota {
		t.Errorf("8 goroutines x 20: %d requests and %d executions allowed; want %d and %d", allowed, executed, limit, quota)
	}
}
