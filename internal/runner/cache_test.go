package runner

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// pinTracker checks the cache's reference counting from outside: a program
// is freed at most once, and never while a caller holds it.
type pinTracker struct {
	mu    sync.Mutex
	pins  map[*program]int
	freed map[*program]int
	bad   []string
}

func (p *pinTracker) pin(prog *program, d int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.freed[prog] > 0 {
		p.bad = append(p.bad, fmt.Sprintf("program %p used after free", prog))
	}
	p.pins[prog] += d
}

func (p *pinTracker) free(prog *program) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pins[prog] != 0 {
		p.bad = append(p.bad, fmt.Sprintf("program %p freed with %d pins", prog, p.pins[prog]))
	}
	p.freed[prog]++
	if p.freed[prog] > 1 {
		p.bad = append(p.bad, fmt.Sprintf("program %p freed %d times", prog, p.freed[prog]))
	}
}

func TestModuleCacheRefcount(t *testing.T) {
	pt := &pinTracker{pins: map[*program]int{}, freed: map[*program]int{}}
	c := newModuleCache(100, pt.free)
	load := func(context.Context) (*program, int64, error) { return &program{}, 60, nil }
	ctx := context.Background()

	a, hit, err := c.acquire(ctx, "a", load)
	if err != nil || hit {
		t.Fatalf("acquire(a) = hit %v, %v; want a miss", hit, err)
	}
	pt.pin(a.prog, 1)
	b, _, _ := c.acquire(ctx, "b", load) // over the bound: evicts a, which is in use
	pt.pin(b.prog, 1)
	if st := c.snapshot(); st.Entries != 1 || st.Evictions != 1 || pt.freed[a.prog] != 0 {
		t.Fatalf("after evicting a pinned entry: %+v, a freed %d times; want 1 entry, 1 eviction, a not freed", st, pt.freed[a.prog])
	}
	pt.pin(a.prog, -1)
	c.release(a)
	if pt.freed[a.prog] != 1 {
		t.Errorf("evicted entry freed %d times after its last release; want 1", pt.freed[a.prog])
	}
	pt.pin(b.prog, -1)
	c.release(b)
	if pt.freed[b.prog] != 0 {
		t.Errorf("resident entry freed after release; want it kept")
	}
	c.clear()
	if pt.freed[b.prog] != 1 || len(pt.bad) > 0 {
		t.Errorf("after clear: b freed %d times, problems %q; want freed once", pt.freed[b.prog], pt.bad)
	}
}

func TestModuleCacheLoadError(t *testing.T) {
	c := newModuleCache(100, func(*program) {})
	boom := fmt.Errorf("boom")
	_, _, err := c.acquire(context.Background(), "a", func(context.Context) (*program, int64, error) { return nil, 0, boom })
	if err != boom {
		t.Errorf("acquire with a failing load error = %v; want %v", err, boom)
	}
	if st := c.snapshot(); st.Entries != 0 {
		t.Errorf("failed load cached: %+v; want no entries", st)
	}
	// A panicking compiler must not take the process down.
	_, _, err = c.acquire(context.Background(), "b", func(context.Context) (*program, int64, error) { panic("compiler bug") })
	if err == nil {
		t.Errorf("acquire with a panicking load error = nil; want an error")
	}
}

// TestModuleCacheHammer churns a cache that holds two of eight keys from
// many goroutines. Run it with -race.
func TestModuleCacheHammer(t *testing.T) {
	pt := &pinTracker{pins: map[*program]int{}, freed: map[*program]int{}}
	c := newModuleCache(2, pt.free)
	var loads atomic.Int64
	load := func(context.Context) (*program, int64, error) {
		loads.Add(1)
		return &program{}, 1, nil
	}
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				e, _, err := c.acquire(context.Background(), fmt.Sprint((g*7+i)%8), load)
				if err != nil {
					t.Errorf("acquire: %v", err)
					return
				}
				pt.pin(e.prog, 1)
				pt.pin(e.prog, -1)
				c.release(e)
			}
		}()
	}
	wg.Wait()
	c.clear()
	st := c.snapshot()
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if len(pt.bad) > 0 {
		t.Fatalf("refcounting broken: %q", pt.bad[:min(5, len(pt.bad))])
	}
	if int64(len(pt.freed)) != loads.Load() || st.Compiles != uint64(loads.Load()) {
		t.Errorf("%d loads, %d compiles counted, %d programs freed; want all equal", loads.Load(), st.Compiles, len(pt.freed))
	}
	if st.Hits+st.Misses != 16*500 {
		t.Errorf("hits+misses = %d; want %d", st.Hits+st.Misses, 16*500)
	}
}
