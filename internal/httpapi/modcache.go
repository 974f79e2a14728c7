package httpapi

import (
	"context"
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
const (
	moduleCacheTTL = 30 * time.Second
	moduleCacheMax = 50_000
)

type moduleCache struct {
	mu      sync.Mutex
	entries map[uuid.UUID]cachedModule
	now     func() time.Time
}

type cachedModule struct {
	m       store.Module
	fetched time.Time
}

func newModuleCache() *moduleCache {
	return &moduleCache{entries: map[uuid.UUID]cachedModule{}, now: time.Now}
}

// get returns a module the principal may see, from the cache or the store.
// Modules are cached whoever asked, and the scope is checked on every hit,
// so another tenant's module is store.ErrNotFound whether cached or not.
func (mc *moduleCache) get(ctx context.Context, st *store.Store, p auth.Principal, id uuid.UUID) (store.Module, error) {
	mc.mu.Lock()
	c, ok := mc.entries[id]
	mc.mu.Unlock()
	if !ok || mc.now().Sub(c.fetched) >= moduleCacheTTL || expired(c.m, mc.now()) {
		m, err := st.GetModule(ctx, store.AllOwners(), id)
		if err != nil {
			return store.Module{}, err
		}
		c = cachedModule{m: m, fetched: mc.now()}
		mc.mu.Lock()
		if len(mc.entries) >= moduleCacheMax {
			clear(mc.entries)
		}
		mc.entries[id] = c
		mc.mu.Unlock()
	}
	if !p.IsAdmin() && c.m.Owner != p.Owner {
		return store.Module{}, store.ErrNotFound
	}
	return c.m, nil
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
