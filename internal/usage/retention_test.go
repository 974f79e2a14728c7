package usage_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
	"github.com/wasmwiz/wasmwiz/internal/usage"
)

func createModule(t *testing.T, st *store.Store, name string, wasm []byte, expires *time.Time) store.Module {
	t.Helper()
	sum := sha256.Sum256(wasm)
	m, err := st.CreateModule(context.Background(), store.Module{
		ID: uuid.Must(uuid.NewV7()), Owner: "alice", Name: name, SHA256: hex.EncodeToString(sum[:]),
		Exports: []string{"_start"}, WASI: true, CreatedAt: time.Now().UTC(), ExpiresAt: expires,
	}, wasm)
	if err != nil {
		t.Fatalf("CreateModule(%s) = %v", name, err)
	}
	return m
}

func TestRetention(t *testing.T) {
	st, _ := testenv.Store(t)
	ctx := context.Background()
	now := time.Now()
	past, future := now.Add(-time.Minute), now.Add(time.Hour)

	// Usage: 5 records past a 30-day retention, 3 within it.
	var recs []store.Execution
	for range 5 {
		recs = append(recs, execRecord("alice", "ok", now.Add(-31*24*time.Hour)))
	}
	for range 3 {
		recs = append(recs, execRecord("alice", "ok", now.Add(-29*24*time.Hour)))
	}
	if err := st.InsertExecutions(ctx, recs); err != nil {
		t.Fatal(err)
	}

	// Modules: an expired ad-hoc module sharing its bytes with a kept
	// module, one with bytes of its own, and one not yet expired.
	shared := []byte("\x00asm\x01\x00\x00\x00 shared")
	own := []byte("\x00asm\x01\x00\x00\x00 own")
	fresh := []byte("\x00asm\x01\x00\x00\x00 fresh")
	kept := createModule(t, st, "kept", shared, nil)
	adhocShared := createModule(t, st, "adhoc-shared", shared, &past)
	adhocOwn := createModule(t, st, "adhoc-own", own, &past)
	adhocFresh := createModule(t, st, "adhoc-fresh", fresh, &future)

	// Audit: 4 events past a year, 2 within it.
	var events []store.AuditEvent
	for i, age := range []time.Duration{400, 380, 370, 366, 300, 1} {
		at := now.Add(-age * 24 * time.Hour)
		events = append(events, store.AuditEvent{ID: store.NewAuditEventID(at), At: at, Action: usage.ActionKeyCreated,
			Outcome: usage.OutcomeSuccess, TargetID: string(rune('a' + i))})
	}
	if err := st.InsertAuditEvents(ctx, events); err != nil {
		t.Fatal(err)
	}

	// Batches of 2, so that every table takes several statements.
	r := usage.NewRetention(st, quiet, usage.RetentionOptions{UsageRetention: 30 * 24 * time.Hour, BatchSize: 2})
	res, err := r.RunOnce(ctx)
	if err != nil {
		t.Fatalf("RunOnce = %v", err)
	}
	if want := (usage.RetentionResult{Executions: 5, Modules: 2, AuditEvents: 4}); res != want {
		t.Errorf("RunOnce = %+v; want %+v", res, want)
	}

	sum, err := st.Usage(ctx, store.Owner("alice"), now.Add(-90*24*time.Hour), now.Add(time.Hour), 5)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Executions != 3 {
		t.Errorf("executions left = %d; want the 3 within retention", sum.Executions)
	}
	for _, tc := range []struct {
		m    store.Module
		want bool
	}{{kept, true}, {adhocShared, false}, {adhocOwn, false}, {adhocFresh, true}} {
		_, err := st.GetModule(ctx, store.AllOwners(), tc.m.ID)
		if exists := err == nil; exists != tc.want {
			t.Errorf("module %s exists = %v (%v); want %v", tc.m.Name, exists, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		sha  string
		want bool
	}{{"shared with a kept module", kept.SHA256, true}, {"of the expired module alone", adhocOwn.SHA256, false},
		{"of the fresh ad-hoc module", adhocFresh.SHA256, true}} {
		_, err := st.BlobBytes(ctx, tc.sha)
		if exists := err == nil; exists != tc.want {
			t.Errorf("bytes %s exist = %v (%v); want %v", tc.name, exists, err, tc.want)
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Errorf("BlobBytes(%s) = %v", tc.name, err)
		}
	}
	left, err := st.ListAuditEvents(ctx, store.AuditQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 {
		t.Errorf("audit events left = %d; want the 2 within a year", len(left))
	}

	// A second run finds nothing.
	if res, err := r.RunOnce(ctx); err != nil || res != (usage.RetentionResult{}) {
		t.Errorf("second RunOnce = %+v, %v; want nothing deleted", res, err)
	}
}

type failingRetention struct{ usage.RetentionStore }

func (failingRetention) DeleteExecutionsBefore(context.Context, time.Time, int) (int64, error) {
	return 0, store.ErrUnavailable
}

func TestRetentionGoesOnAfterAFailure(t *testing.T) {
	st, _ := testenv.Store(t)
	past := time.Now().Add(-time.Minute)
	createModule(t, st, "adhoc", []byte("\x00asm\x01\x00\x00\x00 x"), &past)
	r := usage.NewRetention(failingRetention{st}, quiet, usage.RetentionOptions{})
	res, err := r.RunOnce(context.Background())
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("RunOnce error = %v; want the executions step's ErrUnavailable", err)
	}
	if res.Modules != 1 {
		t.Errorf("modules deleted = %d; want 1: a failing step must not stop the others", res.Modules)
	}
}

func TestRetentionRunStopsWithContext(t *testing.T) {
	st, _ := testenv.Store(t)
	r := usage.NewRetention(st, quiet, usage.RetentionOptions{FirstRun: time.Millisecond, Interval: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	past := time.Now().Add(-time.Minute)
	m := createModule(t, st, "adhoc", []byte("\x00asm\x01\x00\x00\x00 y"), &past)
	testenv.Eventually(t, 10*time.Second, "Run to delete the expired module", func() bool {
		_, err := st.GetModule(context.Background(), store.AllOwners(), m.ID)
		return errors.Is(err, store.ErrNotFound)
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel = %v; want nil", err)
	}
}
