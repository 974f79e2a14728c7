package runner

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// CacheStats describes the compiled-module cache, for metrics.
type CacheStats struct {
	Hits      uint64 // runs that found their module compiled
	Misses    uint64 // runs that had to wait for a compilation (possibly shared)
	Compiles  uint64 // compilations done; below Misses when misses shared one
	Evictions uint64 // modules dropped to stay within the byte bound
	Bytes     int64  // estimated size of the cached modules
	Entries   int    // modules cached
}

// flightTimeout bounds a shared load-and-compile, which outlives the
// context of the run that started it (see acquire).
const flightTimeout = 2 * time.Minute

// moduleCache is an LRU of compiled modules bounded by estimated bytes.
// Entries are reference counted: eviction only unlinks an entry, and its
// compiled code is released when the last run using it ends.
type moduleCache struct {
	capacity int64
	freeProg func(*program) // frees an entry's compiled code
	flights  singleflight.Group

	mu      sync.Mutex
	entries map[string]*entry
	lru     list.List // of *entry, most recently used first
	bytes   int64
	stats   CacheStats
}

type entry struct {
	key  string
	size int64
	prog *program

	// guarded by moduleCache.mu
	refs   int
	elem   *list.Element // nil once evicted
	closed bool
}

func newModuleCache(capacity int64, release func(*program)) *moduleCache {
	return &moduleCache{capacity: capacity, freeProg: release, entries: map[string]*entry{}}
}

// acquire returns the entry for key, compiling it with load on a miss, and
// pins it until release. Concurrent misses for one key share one load. The
// shared load runs on a context detached from any one caller, so that the
// caller who happened to start it cannot fail it for the others by leaving;
// each caller still stops waiting when its own ctx ends.
func (c *moduleCache) acquire(ctx context.Context, key string, load func(context.Context) (*program, int64, error)) (e *entry, hit bool, err error) {
	counted := false
	for {
		c.mu.Lock()
		if e, ok := c.entries[key]; ok {
			e.refs++
			c.lru.MoveToFront(e.elem)
			if !counted {
				c.stats.Hits++
			}
			c.mu.Unlock()
			return e, !counted, nil
		}
		if !counted {
			c.stats.Misses++
			counted = true
		}
		c.mu.Unlock()

		ch := c.flights.DoChan(key, func() (any, error) {
			return c.fill(ctx, key, load)
		})
		var res singleflight.Result
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case res = <-ch:
		}
		if res.Err != nil {
			return nil, false, res.Err
		}
		e := res.Val.(*entry)
		c.mu.Lock()
		if !e.closed {
			e.refs++
			c.mu.Unlock()
			return e, false, nil
		}
		// Evicted and freed between the flight's end and now (only under
		// heavy churn): look again.
		c.mu.Unlock()
	}
}

// fill is the body of a flight: load, compile and insert.
func (c *moduleCache) fill(ctx context.Context, key string, load func(context.Context) (*program, int64, error)) (_ any, err error) {
	c.mu.Lock()
	if e, ok := c.entries[key]; ok { // a flight that just ended filled it
		c.mu.Unlock()
		return e, nil
	}
	c.mu.Unlock()

	defer func() {
		// DoChan re-panics on a goroutine of its own, which would take the
		// whole worker down for one bad module.
		if p := recover(); p != nil {
			err = fmt.Errorf("compile module %s: panic: %v", key, p)
		}
	}()
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flightTimeout)
	defer cancel()
	prog, size, err := load(lctx)
	if err != nil {
		return nil, err
	}
	e := &entry{key: key, size: size, prog: prog}
	var freed []*entry
	c.mu.Lock()
	c.stats.Compiles++
	if old, ok := c.entries[key]; ok {
		freed = c.unlinkLocked(old, freed)
	}
	e.elem = c.lru.PushFront(e)
	c.entries[key] = e
	c.bytes += e.size
	// The new entry itself is never evicted here, even when it alone is
	// over the bound: the runs waiting for it must get to pin it. It goes
	// at the next insertion.
	for c.bytes > c.capacity {
		back := c.lru.Back()
		if back == e.elem {
			break
		}
		freed = c.unlinkLocked(back.Value.(*entry), freed)
		c.stats.Evictions++
	}
	c.mu.Unlock()
	c.free(freed)
	return e, nil
}

// unlinkLocked removes e from the cache; it is freed now if no run holds it,
// else by the last release.
func (c *moduleCache) unlinkLocked(e *entry, freed []*entry) []*entry {
	c.lru.Remove(e.elem)
	e.elem = nil
	delete(c.entries, e.key)
	c.bytes -= e.size
	if e.refs == 0 {
		e.closed = true
		freed = append(freed, e)
	}
	return freed
}

func (c *moduleCache) release(e *entry) {
	c.mu.Lock()
	e.refs--
	free := e.refs == 0 && e.elem == nil && !e.closed
	if free {
		e.closed = true
	}
	c.mu.Unlock()
	if free {
		c.freeProg(e.prog)
	}
}

func (c *moduleCache) free(es []*entry) {
	for _, e := range es {
		c.freeProg(e.prog)
	}
}

// clear unlinks every entry (used at shutdown).
func (c *moduleCache) clear() {
	var freed []*entry
	c.mu.Lock()
	for _, e := range c.entries {
		freed = c.unlinkLocked(e, freed)
	}
	c.mu.Unlock()
	c.free(freed)
}

func (c *moduleCache) snapshot() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Bytes, s.Entries = c.bytes, len(c.entries)
	return s
}
