package auth

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

// slack is what a loaded 2-core machine may add to a bound under test.
const slack = 5 * time.Second

// countingStore counts the key lookups that reach the store.
type countingStore struct {
	KeyStore
	lookups atomic.Int64
}

func (c *countingStore) KeyByHash(ctx context.Context, hash []byte) (store.APIKey, error) {
	c.lookups.Add(1)
	return c.KeyStore.KeyByHash(ctx, hash)
}

func (c *countingStore) GetKey(ctx context.Context, scope store.Scope, id uuid.UUID) (store.APIKey, error) {
	c.lookups.Add(1)
	return c.KeyStore.GetKey(ctx, scope, id)
}

// TestKeyLookupsInPartition: in a network partition a key lookup hangs
// rather than failing. Bounded, it becomes ErrUnavailable within about the
// lookup timeout: a cached key past its TTL (by key or by token) is served
// stale, an uncached one fails; for a moment after, stale keys are served
// without asking the hung store again. A caller's own cancellation stays
// a cancellation.
func TestKeyLookupsInPartition(t *testing.T) {
	st, proxy := testenv.PartitionedStore(t)
	cs := &countingStore{KeyStore: st}
	s := NewService(cs, Options{Salt: testSalt, JWTSecret: testSecret, JWTTTL: time.Hour})
	s.SetFanout(true)
	const bound = 300 * time.Millisecond
	s.lookupTimeout = bound
	ctx := context.Background()
	k, secret, err := s.Bootstrap(ctx, NewKeyRequest{Name: "cached", Owner: "acme", Role: RoleAdmin, Tier: "pro"})
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := s.tokens.Issue(Principal{KeyID: k.ID, Owner: k.Owner, Role: k.Role, Tier: k.Tier})
	if err != nil {
		t.Fatal(err)
	}
	for _, cred := range []string{secret, token} {
		if _, err := s.Authenticate(ctx, "Bearer "+cred, ""); err != nil {
			t.Fatal(err)
		}
	}
	_, uncached, err := s.Bootstrap(ctx, NewKeyRequest{Name: "uncached", Owner: "acme", Role: RoleUser, Tier: "free"})
	if err != nil {
		t.Fatal(err)
	}

	proxy.Partition()
	// Every entry is past its TTL; the clock moves only when the test says.
	now := time.Now().Add(cacheTTL + time.Second)
	s.now = func() time.Time { return now }
	authenticate := func(what string, cred string) (Principal, error) {
		t.Helper()
		start := time.Now()
		p, err := s.Authenticate(ctx, "Bearer "+cred, "")
		if took := time.Since(start); took > bound+slack {
			t.Errorf("%s in a partition took %v; want about the lookup timeout %v", what, took, bound)
		}
		return p, err
	}
	asked := func(what string, want int64) {
		t.Helper()
		if got := cs.lookups.Swap(0); got != want {
			t.Errorf("%s: %d lookups reached the store; want %d", what, got, want)
		}
	}
	cs.lookups.Store(0)

	if p, err := authenticate("stale key", secret); err != nil || p.KeyID != k.ID {
		t.Errorf("cached key past its TTL in a partition = %+v, %v; want it served stale", p, err)
	}
	asked("stale key", 1)
	if p, err := authenticate("stale token just after", token); err != nil || p.KeyID != k.ID {
		t.Errorf("token of a cached key just after an outage was found = %+v, %v; want it served stale", p, err)
	}
	asked("stale token just after an outage was found", 0)

	now = now.Add(bound + 2*time.Second) // past the window of store.Outage
	if p, err := authenticate("stale token", token); err != nil || p.KeyID != k.ID {
		t.Errorf("token of a cached key past its TTL in a partition = %+v, %v; want it served stale", p, err)
	}
	asked("stale token once the window is over", 1)

	if _, err := authenticate("uncached key", uncached); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("uncached key in a partition = %v; want ErrUnavailable", err)
	}
	asked("uncached key", 1)

	t.Run("caller cancels", func(t *testing.T) {
		s.lookupTimeout = time.Minute
		defer func() { s.lookupTimeout = bound }()
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(100*time.Millisecond, cancel)
		start := time.Now()
		_, err := s.Authenticate(cctx, "Bearer "+uncached, "")
		if !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("uncached key, caller cancelled, in a partition = %v; want context.Canceled, not ErrUnavailable", err)
		}
		if took := time.Since(start); took > slack {
			t.Errorf("cancelled lookup took %v", took)
		}
	})
}
