package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

func TestDashboard(t *testing.T) {
	st, _ := testenv.Store(t)
	ctx := context.Background()
	until := time.Date(2030, 5, 6, 12, 30, 0, 0, time.UTC)
	since := until.Add(-24 * time.Hour)

	kept, err := st.CreateModule(ctx, newModule(t, "acme", "kept.wasm", []byte("\x00asm kept")), []byte("\x00asm kept"))
	if err != nil {
		t.Fatal(err)
	}
	adhoc := newModule(t, "acme", "adhoc.wasm", []byte("\x00asm adhoc"))
	expires := until.Add(time.Hour)
	adhoc.ExpiresAt = &expires
	if _, err := st.CreateModule(ctx, adhoc, []byte("\x00asm adhoc")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateModule(ctx, newModule(t, "other", "theirs.wasm", []byte("\x00asm theirs")), []byte("\x00asm theirs")); err != nil {
		t.Fatal(err)
	}

	exec := func(owner, status string, at time.Time, ms float64, module *uuid.UUID) store.Execution {
		e := store.Execution{ID: uuid.Must(uuid.NewV7()), Owner: owner, Status: status, DurationMS: ms, CreatedAt: at}
		if module != nil {
			e.ModuleID = *module
		}
		return e
	}
	gone := uuid.Must(uuid.NewV7())
	recs := []store.Execution{
		exec("acme", "ok", since, 1, &kept.ID),                        // first instant: bucket 0
		exec("acme", "ok", since.Add(90*time.Minute), 2, &kept.ID),    // bucket 1
		exec("acme", "trap", since.Add(100*time.Minute), 3, &gone),    // bucket 1, module deleted
		exec("acme", "ok", until.Add(-time.Nanosecond*1000), 4, nil),  // last instant: bucket 23
		exec("acme", "ok", since.Add(-time.Minute), 5, &kept.ID),      // before the range
		exec("acme", "ok", until, 6, &kept.ID),                        // after the range (half-open)
		exec("other", "ok", since.Add(2*time.Hour), 7, nil),           // another tenant
		exec("other", "timeout", since.Add(3*time.Hour), 8, &kept.ID), // another tenant
	}
	if err := st.InsertExecutions(ctx, recs); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name        string
		scope       store.Scope
		modules     int64
		executions  int64
		buckets     map[int][2]int64 // index → total, failed; others zero
		recent      int
		firstRecent float64 // duration of the newest recent execution
	}{
		{name: "owner", scope: store.Owner("acme"), modules: 1, executions: 4,
			buckets: map[int][2]int64{0: {1, 0}, 1: {2, 1}, 23: {1, 0}}, recent: 3, firstRecent: 6},
		{name: "all owners", scope: store.AllOwners(), modules: 2, executions: 6,
			buckets: map[int][2]int64{0: {1, 0}, 1: {2, 1}, 2: {1, 0}, 3: {1, 1}, 23: {1, 0}}, recent: 3, firstRecent: 6},
		{name: "nobody", scope: store.Owner("nobody"), buckets: map[int][2]int64{}, recent: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := st.Dashboard(ctx, tt.scope, since, until, 24, 3)
			if err != nil {
				t.Fatalf("Dashboard = %v", err)
			}
			if d.Modules != tt.modules {
				t.Errorf("Modules = %d; want %d", d.Modules, tt.modules)
			}
			if d.Usage.Executions != tt.executions {
				t.Errorf("Usage.Executions = %d; want %d", d.Usage.Executions, tt.executions)
			}
			if len(d.Buckets) != 24 {
				t.Fatalf("len(Buckets) = %d; want 24", len(d.Buckets))
			}
			var sum int64
			for i, b := range d.Buckets {
				want := tt.buckets[i]
				if b.Total != want[0] || b.Failed != want[1] {
					t.Errorf("Buckets[%d] = %d total, %d failed; want %d, %d", i, b.Total, b.Failed, want[0], want[1])
				}
				if wantStart := since.Add(time.Duration(i) * time.Hour); !b.Start.Equal(wantStart) {
					t.Errorf("Buckets[%d].Start = %v; want %v", i, b.Start, wantStart)
				}
				sum += b.Total
			}
			if sum != d.Usage.Executions {
				t.Errorf("buckets add up to %d; want the usage's %d", sum, d.Usage.Executions)
			}
			if len(d.Recent) != tt.recent {
				t.Fatalf("len(Recent) = %d; want %d", len(d.Recent), tt.recent)
			}
			if tt.recent == 0 {
				return
			}
			if d.Recent[0].DurationMS != tt.firstRecent {
				t.Errorf("Recent[0].DurationMS = %v; want %v (newest first)", d.Recent[0].DurationMS, tt.firstRecent)
			}
			for i := 1; i < len(d.Recent); i++ {
				if d.Recent[i].CreatedAt.After(d.Recent[i-1].CreatedAt) {
					t.Errorf("Recent[%d] is newer than Recent[%d]", i, i-1)
				}
			}
		})
	}

	t.Run("module names", func(t *testing.T) {
		d, err := st.Dashboard(ctx, store.Owner("acme"), since, until, 24, 10)
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]string{}
		for _, e := range d.Recent {
			name := "<nil>"
			if e.ModuleName != nil {
				name = *e.ModuleName
			}
			id := "<nil>"
			if e.ModuleID != nil {
				id = e.ModuleID.String()
			}
			names[id] = name
		}
		if names[kept.ID.String()] != "kept.wasm" {
			t.Errorf("name of kept module = %q; want kept.wasm", names[kept.ID.String()])
		}
		if names[gone.String()] != "<nil>" {
			t.Errorf("name of deleted module = %q; want nil", names[gone.String()])
		}
		if _, ok := names["<nil>"]; !ok {
			t.Errorf("execution without module missing from %v", names)
		}
	})

	t.Run("empty range", func(t *testing.T) {
		if _, err := st.Dashboard(ctx, store.AllOwners(), until, until, 24, 3); err == nil {
			t.Error("Dashboard(until, until) = nil error; want one")
		}
	})
}
