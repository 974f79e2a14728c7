package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/store"
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
