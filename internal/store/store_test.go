package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

func newModule(t *testing.T, owner, name string, wasm []byte) store.Module {
	t.Helper()
	sum := sha256.Sum256(wasm)
	return store.Module{
		ID: uuid.Must(uuid.NewV7()), Owner: owner, Name: name,
		SHA256: hex.EncodeToString(sum[:]), Exports: []string{"_start"}, WASI: true,
		CreatedAt: time.Now().UTC().Truncate(time.Microsecond),
	}
}

func TestMigrateTwiceAndConcurrently(t *testing.T) {
	dbURL := testenv.Database(t) // already migrated once
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { _, errs[i] = store.Migrate(ctx, dbURL) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Migrate #%d concurrently = %v; want nil", i, err)
		}
	}
	if n, err := store.Migrate(ctx, dbURL); err != nil || n != 0 {
		t.Errorf("Migrate again = %d applied, %v; want 0, nil", n, err)
	}
}

func TestModuleLifecycle(t *testing.T) {
	s, _ := testenv.Store(t)
	ctx := context.Background()
	wasm := []byte("\x00asm\x01\x00\x00\x00 stand-in bytes")

	a, err := s.CreateModule(ctx, newModule(t, "alice", "a", wasm), wasm)
	if err != nil {
		t.Fatalf("CreateModule(a) = %v", err)
	}
	b, err := s.CreateModule(ctx, newModule(t, "bob", "b", wasm), wasm)
	if err != nil {
		t.Fatalf("CreateModule(b, same bytes) = %v", err)
	}
	if n, _ := s.BlobCount(ctx); n != 1 {
		t.Errorf("BlobCount after two uploads of the same bytes = %d; want 1", n)
	}
	if a.SizeBytes != int64(len(wasm)) {
		t.Errorf("SizeBytes = %d; want %d", a.SizeBytes, len(wasm))
	}

	if _, err := s.GetModule(ctx, store.Owner("bob"), a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetModule(bob, alice's) = %v; want ErrNotFound", err)
	}
	if got, err := s.GetModule(ctx, store.AllOwners(), a.ID); err != nil || got.Name != "a" {
		t.Errorf("GetModule(admin, a) = %+v, %v; want a", got, err)
	}
	if err := s.DeleteModule(ctx, store.Owner("bob"), a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteModule(bob, alice's) = %v; want ErrNotFound", err)
	}

	if err := s.DeleteModule(ctx, store.Owner("alice"), a.ID); err != nil {
		t.Fatalf("DeleteModule(a) = %v", err)
	}
	if got, err := s.BlobBytes(ctx, b.SHA256); err != nil || string(got) != string(wasm) {
		t.Errorf("BlobBytes after deleting one of two sharers = %q, %v; want the bytes kept", got, err)
	}
	if err := s.DeleteModule(ctx, store.Owner("bob"), b.ID); err != nil {
		t.Fatalf("DeleteModule(b) = %v", err)
	}
	if _, err := s.BlobBytes(ctx, b.SHA256); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("BlobBytes after deleting the last sharer = %v; want ErrNotFound", err)
	}
	if err := s.DeleteModule(ctx, store.Owner("bob"), b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteModule twice = %v; want ErrNotFound", err)
	}
}

func TestListModulesPagination(t *testing.T) {
	s, _ := testenv.Store(t)
	ctx := context.Background()
	const total = 23
	want := map[uuid.UUID]bool{}
	for i := range total {
		wasm := []byte(fmt.Sprintf("module %d", i%5)) // shared blobs too
		m, err := s.CreateModule(ctx, newModule(t, "alice", fmt.Sprintf("m%d", i), wasm), wasm)
		if err != nil {
			t.Fatal(err)
		}
		want[m.ID] = true
	}
	other := []byte("bob's")
	if _, err := s.CreateModule(ctx, newModule(t, "bob", "x", other), other); err != nil {
		t.Fatal(err)
	}
	adhoc := newModule(t, "alice", "adhoc", other)
	exp := time.Now().Add(time.Hour)
	adhoc.ExpiresAt = &exp
	if _, err := s.CreateModule(ctx, adhoc, other); err != nil {
		t.Fatal(err)
	}

	for _, limit := range []int{1, 5, 23, 100} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
			seen := map[uuid.UUID]bool{}
			cursor := uuid.Nil
			var prev uuid.UUID
			for page := 0; ; page++ {
				mods, err := s.ListModules(ctx, store.Owner("alice"), cursor, limit)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range mods {
					if seen[m.ID] {
						t.Fatalf("module %s listed twice", m.ID)
					}
					if !want[m.ID] {
						t.Fatalf("module %s (%s of %s) should not be listed", m.ID, m.Name, m.Owner)
					}
					if prev != uuid.Nil && m.ID.String() >= prev.String() {
						t.Fatalf("not newest first: %s after %s", m.ID, prev)
					}
					prev = m.ID
					seen[m.ID] = true
				}
				if len(mods) < limit {
					break
				}
				cursor = mods[len(mods)-1].ID
				if page > total {
					t.Fatal("pagination does not end")
				}
			}
			if len(seen) != total {
				t.Errorf("listed %d modules; want %d", len(seen), total)
			}
		})
	}

	all, err := s.ListModules(ctx, store.AllOwners(), uuid.Nil, 100)
	if err != nil || len(all) != total+1 {
		t.Errorf("ListModules(admin) = %d modules, %v; want %d (ad-hoc excluded)", len(all), err, total+1)
	}
}

// A delete of the last module sharing some bytes, racing an upload of the
// same bytes, must never leave a module without its blob.
func TestDeleteRacesUpload(t *testing.T) {
	s, _ := testenv.Store(t)
	ctx := context.Background()
	wasm := []byte("contended bytes")
	for i := range 20 {
		m, err := s.CreateModule(ctx, newModule(t, "alice", "old", wasm), wasm)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var created store.Module
		var createErr, deleteErr error
		wg.Go(func() { deleteErr = s.DeleteModule(ctx, store.Owner("alice"), m.ID) })
		wg.Go(func() { created, createErr = s.CreateModule(ctx, newModule(t, "alice", "new", wasm), wasm) })
		wg.Wait()
		if deleteErr != nil || createErr != nil {
			t.Fatalf("round %d: delete = %v, create = %v; want both nil", i, deleteErr, createErr)
		}
		if _, err := s.BlobBytes(ctx, created.SHA256); err != nil {
			t.Fatalf("round %d: blob of the new module = %v; want present", i, err)
		}
		if err := s.DeleteModule(ctx, store.Owner("alice"), created.ID); err != nil {
			t.Fatal(err)
		}
	}
}
