package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/config"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
	"github.com/wasmwiz/wasmwiz/testdata"
)

func TestModuleCache(t *testing.T) {
	var runs atomic.Int64
	a := newTestAPI(t, productionEnv, executorFunc(func(context.Context, protocol.Request) (protocol.Reply, error) {
		runs.Add(1)
		return protocol.Reply{Status: "ok", Worker: "fake"}, nil
	}))
	admin := a.bootstrap(t, "ops", auth.RoleAdmin, "pro")
	alice := a.bootstrap(t, "alice", auth.RoleUser, "pro")
	bob := a.bootstrap(t, "bob", auth.RoleUser, "pro")
	up := a.do(t, "POST", "/api/wasm/upload?name=h", "application/wasm", bytes.NewReader(testdata.Module("hello.wasm")), bearer(alice)...)
	var m moduleJSON
	up.json(t, &m)
	body := `{"module_id":"` + m.ID + `"}`
	exec := func(key string) response {
		return a.do(t, "POST", "/api/wasm/execute", "application/json", strings.NewReader(body), bearer(key)...)
	}

	if r := exec(admin); r.status != 200 { // now cached
		t.Fatalf("admin executes = %d %s", r.status, r.body)
	}
	if r := exec(bob); r.status != 404 || r.errorCode(t) != "module_not_found" {
		t.Errorf("bob executes alice's cached module = %d %s; want 404 module_not_found", r.status, r.body)
	}
	if r := exec(alice); r.status != 200 {
		t.Errorf("alice executes her cached module = %d %s", r.status, r.body)
	}
	if r := a.do(t, "DELETE", "/api/wasm/modules/"+m.ID, "", nil, bearer(alice)...); r.status != 204 {
		t.Fatalf("delete = %d", r.status)
	}
	before := runs.Load()
	if r := exec(alice); r.status != 404 {
		t.Errorf("execute after delete = %d %s; want 404 (the cache forgets deleted modules)", r.status, r.body)
	}
	if runs.Load() != before {
		t.Errorf("a deleted module was sent to a worker")
	}

	// Eviction from another replica's broadcast.
	up = a.do(t, "POST", "/api/wasm/upload?name=h2", "application/wasm", bytes.NewReader(testdata.Module("hello.wasm")), bearer(alice)...)
	up.json(t, &m)
	body = `{"module_id":"` + m.ID + `"}`
	if r := exec(alice); r.status != 200 {
		t.Fatalf("execute = %d", r.status)
	}
	if err := a.store.DeleteModule(context.Background(), scopeOf(auth.Principal{Role: auth.RoleAdmin}), mustUUID(t, m.ID)); err != nil {
		t.Fatal(err)
	}
	a.srv.EvictModule(mustUUID(t, m.ID))
	if r := exec(alice); r.status != 404 {
		t.Errorf("execute after a remote delete and eviction = %d; want 404", r.status)
	}
}

func mustUUID(t *testing.T, s string) uuid.UUID {
	t.Helper()
	id, err := uuid.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// flakyModules answers from a fixed module, or fails as an unreachable
// database does.
type flakyModules struct {
	m    store.Module
	down bool
}

func (f *flakyModules) GetModule(context.Context, store.Scope, uuid.UUID) (store.Module, error) {
	if f.down {
		return store.Module{}, fmt.Errorf("get module: %w", store.ErrUnavailable)
	}
	return f.m, nil
}

// While PostgreSQL is unreachable a cached module goes on serving past its
// TTL, up to moduleStaleMax; an uncached one, or a stale ad-hoc module past
// its lifetime, is the store's error.
func TestModuleCacheStaleWhileUnavailable(t *testing.T) {
	now := time.Now()
	mc := newModuleCache()
	mc.now = func() time.Time { return now }
	owner := auth.Principal{Owner: "alice", Role: auth.RoleUser}
	id := uuid.New()
	st := &flakyModules{m: store.Module{ID: id, Owner: "alice", Name: "m"}}
	if _, err := mc.get(context.Background(), st, owner, id); err != nil {
		t.Fatal(err)
	}
	st.down = true
	now = now.Add(moduleCacheTTL + time.Second)
	if m, err := mc.get(context.Background(), st, owner, id); err != nil || m.ID != id {
		t.Errorf("stale entry with the database down = %v, %v; want the cached module", m.ID, err)
	}
	if _, err := mc.get(context.Background(), st, auth.Principal{Owner: "bob", Role: auth.RoleUser}, id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("another tenant, stale entry = %v; want ErrNotFound (scope still checked)", err)
	}
	if _, err := mc.get(context.Background(), st, owner, uuid.New()); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("uncached module with the database down = %v; want ErrUnavailable", err)
	}
	now = now.Add(moduleStaleMax)
	if _, err := mc.get(context.Background(), st, owner, id); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("entry older than moduleStaleMax = %v; want ErrUnavailable", err)
	}

	// An ad-hoc module past its lifetime is not served stale.
	exp := now.Add(time.Minute)
	st.down = false
	st.m.ExpiresAt = &exp
	id2 := uuid.New()
	st.m.ID = id2
	if _, err := mc.get(context.Background(), st, owner, id2); err != nil {
		t.Fatal(err)
	}
	st.down = true
	now = now.Add(2 * time.Minute)
	if _, err := mc.get(context.Background(), st, owner, id2); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("expired ad-hoc module with the database down = %v; want ErrUnavailable", err)
	}
}

// slack is what a loaded 2-core machine may add to a bound under test.
const slack = 5 * time.Second

// TestExecuteInPartition: in a network partition a module lookup hangs
// rather than failing. Bounded, an execute of a cached module past its TTL
// is served from the stale entry within about the lookup timeout, and one
// of an uncached module is 503 database_unavailable as quickly.
func TestExecuteInPartition(t *testing.T) {
	a, proxy := newPartitionedAPI(t, executorFunc(func(context.Context, protocol.Request) (protocol.Reply, error) {
		return protocol.Reply{Status: "ok", Worker: "fake"}, nil
	}))
	const bound = 300 * time.Millisecond
	a.srv.modules.timeout = bound
	alice := a.bootstrap(t, "alice", auth.RoleUser, "pro")
	upload := func(name string) string {
		r := a.do(t, "POST", "/api/wasm/upload?name="+name, "application/wasm", bytes.NewReader(testdata.Module("hello.wasm")), bearer(alice)...)
		var m moduleJSON
		r.json(t, &m)
		return m.ID
	}
	cached, uncached := upload("cached"), upload("uncached")
	exec := func(id string) response {
		t.Helper()
		start := time.Now()
		r := a.do(t, "POST", "/api/wasm/execute", "application/json", strings.NewReader(`{"module_id":"`+id+`"}`), bearer(alice)...)
		if took := time.Since(start); took > bound+slack {
			t.Errorf("execute in a partition took %v; want about the lookup timeout %v", took, bound)
		}
		return r
	}
	if r := exec(cached); r.status != 200 { // caches the key and the module
		t.Fatalf("execute before the partition = %d %s", r.status, r.body)
	}

	proxy.Partition()
	past := time.Now().Add(moduleCacheTTL + time.Second)
	a.srv.modules.now = func() time.Time { return past }
	if r := exec(cached); r.status != 200 {
		t.Errorf("execute of a cached module past its TTL in a partition = %d %s; want 200 from the stale entry", r.status, r.body)
	}
	if r := exec(uncached); r.status != 503 || r.errorCode(t) != "database_unavailable" {
		t.Errorf("execute of an uncached module in a partition = %d %s; want 503 database_unavailable", r.status, r.body)
	}
}

// TestModuleCacheInPartition: the cache itself, on a store whose way to
// PostgreSQL is hung: stale entries serve, and once an outage is found
// they serve without asking again for a moment; an uncached module is
// ErrUnavailable; a caller's own cancellation stays a cancellation.
func TestModuleCacheInPartition(t *testing.T) {
	st, proxy := testenv.PartitionedStore(t)
	cs := &countingModules{st: st}
	ctx := context.Background()
	wasm := testdata.Module("hello.wasm")
	m, err := st.CreateModule(ctx, store.Module{ID: uuid.Must(uuid.NewV7()), Owner: "alice", Name: "m", Exports: []string{"_start"}, WASI: true,
		SHA256: fmt.Sprintf("%x", sha256.Sum256(wasm)), CreatedAt: time.Now().UTC()}, wasm)
	if err != nil {
		t.Fatal(err)
	}
	mc := newModuleCache()
	const bound = 300 * time.Millisecond
	mc.timeout = bound
	owner := auth.Principal{Owner: "alice", Role: auth.RoleUser}
	if _, err := mc.get(ctx, cs, owner, m.ID); err != nil {
		t.Fatal(err)
	}

	proxy.Partition()
	now := time.Now().Add(moduleCacheTTL + time.Second)
	mc.now = func() time.Time { return now } // moves only when the test says
	get := func(ctx context.Context, id uuid.UUID) (store.Module, error) {
		t.Helper()
		start := time.Now()
		got, err := mc.get(ctx, cs, owner, id)
		if took := time.Since(start); took > bound+slack {
			t.Errorf("get in a partition took %v; want about the lookup timeout %v", took, bound)
		}
		return got, err
	}
	asked := func(what string, want int64) {
		t.Helper()
		if got := cs.calls.Swap(0); got != want {
			t.Errorf("%s: %d lookups reached the store; want %d", what, got, want)
		}
	}
	cs.calls.Store(0)
	if got, err := get(ctx, m.ID); err != nil || got.ID != m.ID {
		t.Errorf("stale entry in a partition = %v, %v; want the cached module", got.ID, err)
	}
	asked("stale entry", 1)
	if got, err := get(ctx, m.ID); err != nil || got.ID != m.ID {
		t.Errorf("stale entry just after an outage was found = %v, %v; want the cached module", got.ID, err)
	}
	asked("stale entry just after an outage was found", 0)
	if _, err := get(ctx, uuid.Must(uuid.NewV7())); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("uncached module in a partition = %v; want ErrUnavailable", err)
	}
	asked("uncached module", 1)

	mc.timeout = time.Minute
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	if _, err := mc.get(cctx, cs, owner, uuid.Must(uuid.NewV7())); !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("uncached module, caller cancelled, in a partition = %v; want context.Canceled, not ErrUnavailable", err)
	}
	if took := time.Since(start); took > slack {
		t.Errorf("cancelled lookup took %v", took)
	}
}

// countingModules counts the module lookups that reach the store.
type countingModules struct {
	st    *store.Store
	calls atomic.Int64
}

func (c *countingModules) GetModule(ctx context.Context, scope store.Scope, id uuid.UUID) (store.Module, error) {
	c.calls.Add(1)
	return c.st.GetModule(ctx, scope, id)
}

// newPartitionedAPI is newTestAPI on a store reached through a
// testenv.BlackHoleProxy, without a rate limiter (Redis is not under test), and
// with revocation broadcasts deemed received so that stale keys may serve.
func newPartitionedAPI(t *testing.T, exec Executor) (*testAPI, *testenv.BlackHoleProxy) {
	t.Helper()
	st, proxy := testenv.PartitionedStore(t)
	cfg, err := config.Load(func(k string) string { return productionEnv[k] })
	if err != nil {
		t.Fatal(err)
	}
	keys := auth.NewService(st, auth.Options{Salt: []byte(cfg.APISalt), JWTSecret: []byte(cfg.JWTSecret), JWTTTL: cfg.JWTTTL})
	keys.SetFanout(true)
	return startTestAPI(t, cfg, st, exec, nil, keys), proxy
}
