package httpapi

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/store"
)

// Module metadata is immutable from upload to deletion, so the api caches
// it: a hot execute then needs no query. A deletion evicts the entry here
// and, through OnModuleDeleted, on the other replicas; the TTL bounds what
// a missed broadcast can cost (a deleted module runnable a little longer
// on one replica, whose worker may still hold it compiled).
//
// While PostgreSQL is unreachable an entry up to moduleStaleMax old is still
// used: a module cannot be deleted without the database, and a deletion
// made before the outage evicted it, so executes of cached modules go on.
const (
	moduleCacheTTL = 30 * time.Second
	moduleStaleMax = 10 * time.Minute
	moduleCacheMax = 50_000
)

type moduleCache struct {
	mu      sync.Mutex
	entries map[uuid.UUID]cachedModule
	now     func() time.Time
	// timeout bounds each lookup in the store (store.LookupTimeout; tests
	// shorten it), so that a hung database serves stale entries or 503s
	// rather than holding every execute.
	timeout time.Duration
	outage  store.Outage
}

type cachedModule struct {
	m       store.Module
	fetched time.Time
}

func newModuleCache() *moduleCache {
	return &moduleCache{entries: map[uuid.UUID]cachedModule{}, now: time.Now, timeout: store.LookupTimeout}
}

// moduleGetter is the store's one method the cache needs.
type moduleGetter interface {
	GetModule(ctx context.Context, scope store.Scope, id uuid.UUID) (store.Module, error)
}

// get returns a module the principal may see, from the cache or the store.
// Modules are cached whoever asked, and the scope is checked on every hit,
// so another tenant's module is store.ErrNotFound whether cached or not.
func (mc *moduleCache) get(ctx context.Context, st moduleGetter, p auth.Principal, id uuid.UUID) (store.Module, error) {
	mc.mu.Lock()
	c, ok := mc.entries[id]
	mc.mu.Unlock()
	fresh := ok && mc.now().Sub(c.fetched) < moduleCacheTTL && !expired(c.m, mc.now())
	// While the store was just found unavailable, a usable stale entry
	// serves without waiting on it again (store.Outage).
	if !fresh && !(ok && mc.usableStale(c) && mc.outage.Skip(mc.now(), mc.timeout)) {
		m, err := store.Within(ctx, mc.timeout, func(ctx context.Context) (store.Module, error) {
			return st.GetModule(ctx, store.AllOwners(), id)
		})
		mc.outage.Report(mc.now(), err)
		switch {
		case err == nil:
			c = cachedModule{m: m, fetched: mc.now()}
			mc.mu.Lock()
			if len(mc.entries) >= moduleCacheMax {
				clear(mc.entries)
			}
			mc.entries[id] = c
			mc.mu.Unlock()
		case ok && errors.Is(err, store.ErrUnavailable) && mc.usableStale(c):
			// Stale but safe; see moduleStaleMax.
		default:
			return store.Module{}, err
		}
	}
	if !p.IsAdmin() && c.m.Owner != p.Owner {
		return store.Module{}, store.ErrNotFound
	}
	return c.m, nil
}

// usableStale says whether an entry past its TTL may stand in for the
// store while the store is unavailable (see moduleStaleMax).
func (mc *moduleCache) usableStale(c cachedModule) bool {
	return !expired(c.m, mc.now()) && mc.now().Sub(c.fetched) < moduleStaleMax
}

// expired reports an ad-hoc module past its lifetime: the retention job
// may have removed its bytes already.
func expired(m store.Module, now time.Time) bool {
	return m.ExpiresAt != nil && !now.Before(*m.ExpiresAt)
}

func (mc *moduleCache) evict(id uuid.UUID) {
	mc.mu.Lock()
	delete(mc.entries, id)
	mc.mu.Unlock()
}

// EvictModule forgets a module deleted through another replica.
func (s *Server) EvictModule(id uuid.UUID) { s.modules.evict(id) }
