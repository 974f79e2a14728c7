package usage_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/telemetry"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
	"github.com/wasmwiz/wasmwiz/internal/usage"
)

// syncBuffer is a log sink safe for the auditor's goroutines.
type syncBuffer struct{ testenv.SyncBuffer }

// lines are the JSON log lines whose msg is msg.
func (b *syncBuffer) lines(msg string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func TestAuditorRecordsAndLogs(t *testing.T) {
	st, _ := testenv.Store(t)
	logs := &syncBuffer{}
	a, err := usage.NewAuditor(st, telemetry.NewLogger(logs, slog.LevelInfo, "api"), prometheus.NewRegistry(), usage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	key := uuid.Must(uuid.NewV7())
	ctx := telemetry.WithRequestID(context.Background(), "req-42")
	a.Record(ctx, usage.Event{Action: usage.ActionKeyCreated, Outcome: usage.OutcomeSuccess, KeyID: key, Owner: "ops",
		TargetID: "k-1", ClientIP: "192.0.2.1", Detail: map[string]any{"role": "user"}})
	a.Record(ctx, usage.Event{Action: "Not An Action", Outcome: usage.OutcomeSuccess})
	if err := a.Close(context.Background()); err != nil {
		t.Fatalf("Close = %v", err)
	}

	events, err := st.ListAuditEvents(context.Background(), store.AuditQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 {
		t.Fatalf("events = %d; want 1 (the invalid action is refused)", len(events))
	}
	e := events[0]
	if e.Action != usage.ActionKeyCreated || e.Outcome != usage.OutcomeSuccess || e.KeyID != key || e.Owner != "ops" ||
		e.TargetID != "k-1" || e.ClientIP != "192.0.2.1" || e.RequestID != "req-42" || !strings.Contains(string(e.Detail), `"role": "user"`) {
		t.Errorf("event = %+v (detail %s)", e, e.Detail)
	}
	if uuidMillis(e.ID) != e.At.UnixMilli() {
		t.Errorf("event id %s does not carry its time %v", e.ID, e.At)
	}
	lines := logs.lines("audit")
	if len(lines) != 1 || lines[0]["action"] != usage.ActionKeyCreated || lines[0]["request_id"] != "req-42" {
		t.Errorf("audit log lines = %v; want one key.created line with the request id", lines)
	}
	if len(logs.lines("audit event with an invalid action not recorded")) != 1 {
		t.Errorf("invalid action not logged as an error")
	}
}

func uuidMillis(id uuid.UUID) int64 {
	var ms int64
	for _, b := range id[:6] {
		ms = ms<<8 | int64(b)
	}
	return ms
}

func TestAuditorCoalescesFloods(t *testing.T) {
	st, _ := testenv.Store(t)
	logs := &syncBuffer{}
	a, err := usage.NewAuditor(st, telemetry.NewLogger(logs, slog.LevelInfo, "api"), nil, usage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	refused := func(ip, reason string) usage.Event {
		return usage.Event{Action: usage.ActionAuthRefused, Outcome: usage.OutcomeDenied, ClientIP: ip,
			Detail: map[string]any{"reason": reason}}
	}
	const flood = 200
	for range flood {
		a.Record(context.Background(), refused("192.0.2.1", "unknown"))
	}
	a.Record(context.Background(), refused("192.0.2.1", "revoked"))
	a.Record(context.Background(), refused("192.0.2.2", "unknown"))
	// Other actions are never coalesced.
	for range 3 {
		a.Record(context.Background(), usage.Event{Action: usage.ActionModuleDeleted, Outcome: usage.OutcomeSuccess, ClientIP: "192.0.2.1"})
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatalf("Close = %v", err)
	}
	events, err := st.ListAuditEvents(context.Background(), store.AuditQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	// However the flood fell into one-second windows, every event is
	// accounted for: each row stands for itself plus its repeats.
	stands := map[string]int{}
	rows := 0
	for _, e := range events {
		var d struct {
			Reason  string `json:"reason"`
			Repeats int    `json:"repeats"`
		}
		json.Unmarshal(e.Detail, &d)
		// The first of a window stands for itself; the window's summary
		// for the repeats that followed it.
		n := 1
		if d.Repeats > 0 {
			n = d.Repeats
		}
		stands[e.Action+" "+e.ClientIP+" "+d.Reason] += n
		rows++
	}
	want := map[string]int{
		"auth.refused 192.0.2.1 unknown": flood, "auth.refused 192.0.2.1 revoked": 1,
		"auth.refused 192.0.2.2 unknown": 1, "module.deleted 192.0.2.1 ": 3,
	}
	for k, n := range want {
		if stands[k] != n {
			t.Errorf("events standing for %q = %d; want %d (all: %v)", k, stands[k], n, stands)
		}
	}
	if rows > 20 {
		t.Errorf("%d rows for a flood of %d identical refusals; want them coalesced", rows, flood)
	}
	if got := len(logs.lines("audit")); got != rows {
		t.Errorf("audit log lines = %d; want one per row (%d)", got, rows)
	}
}

func TestAuditorNeverDropsSilently(t *testing.T) {
	g := make(chan struct{})
	stuck := func(ctx context.Context, _ []store.AuditEvent) error {
		select {
		case <-g:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	a, err := usage.NewAuditor(auditWriterFunc(stuck), telemetry.NewLogger(logs, slog.LevelInfo, "api"), reg,
		usage.Options{QueueSize: 2, BatchSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	for i := range 10 {
		a.Record(context.Background(), usage.Event{Action: usage.ActionModuleUploaded, Outcome: usage.OutcomeSuccess,
			TargetID: "m" + string(rune('0'+i))})
	}
	// One in the writer, two queued, the rest dropped; racing the writer
	// taking the first, at least 7 are dropped.
	dropped := a.Dropped()
	if dropped < 7 {
		t.Errorf("Dropped = %d; want at least 7", dropped)
	}
	if got := metricValue(t, reg, "wasmwiz_audit_dropped_total"); got != float64(dropped) {
		t.Errorf("wasmwiz_audit_dropped_total = %v; want %d", got, dropped)
	}
	lost := logs.lines("audit event dropped")
	if len(lost) != int(dropped) {
		t.Errorf("error lines for dropped events = %d; want %d", len(lost), dropped)
	}
	for _, l := range lost {
		if l["level"] != "ERROR" || l["target_id"] == nil || l["action"] != usage.ActionModuleUploaded {
			t.Errorf("dropped event line = %v; want an ERROR line naming the event", l)
		}
	}
	close(g)
	if err := a.Close(context.Background()); err != nil {
		t.Fatalf("Close = %v", err)
	}
}

type auditWriterFunc func(context.Context, []store.AuditEvent) error

func (f auditWriterFunc) InsertAuditEvents(ctx context.Context, e []store.AuditEvent) error {
	return f(ctx, e)
}

func TestAuditListFilters(t *testing.T) {
	st, _ := testenv.Store(t)
	ctx := context.Background()
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	var events []store.AuditEvent
	for i := range 10 {
		at := base.Add(time.Duration(i) * time.Hour)
		owner, action := "alice", usage.ActionModuleUploaded
		if i%2 == 1 {
			owner, action = "bob", usage.ActionKeyCreated
		}
		events = append(events, store.AuditEvent{ID: store.NewAuditEventID(at), At: at, Owner: owner, Action: action,
			Outcome: usage.OutcomeSuccess})
	}
	if err := st.InsertAuditEvents(ctx, events); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		q    store.AuditQuery
		want []int // indexes into events, newest first
	}{
		{"all", store.AuditQuery{}, []int{9, 8, 7, 6, 5, 4, 3, 2, 1, 0}},
		{"owner", store.AuditQuery{Owner: "alice"}, []int{8, 6, 4, 2, 0}},
		{"action", store.AuditQuery{Action: usage.ActionKeyCreated}, []int{9, 7, 5, 3, 1}},
		{"since (inclusive)", store.AuditQuery{Since: base.Add(7 * time.Hour)}, []int{9, 8, 7}},
		{"until (exclusive)", store.AuditQuery{Until: base.Add(2 * time.Hour)}, []int{1, 0}},
		{"until between milliseconds", store.AuditQuery{Until: base.Add(2*time.Hour + time.Microsecond)}, []int{2, 1, 0}},
		{"range and owner", store.AuditQuery{Owner: "bob", Since: base.Add(2 * time.Hour), Until: base.Add(6 * time.Hour)}, []int{5, 3}},
		{"before a cursor", store.AuditQuery{Before: events[4].ID}, []int{3, 2, 1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.q.Limit = 100
			got, err := st.ListAuditEvents(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var idx []int
			for _, e := range got {
				for i := range events {
					if events[i].ID == e.ID {
						idx = append(idx, i)
					}
				}
			}
			if !equalInts(idx, tt.want) {
				t.Errorf("ListAuditEvents(%+v) = %v; want %v", tt.q, idx, tt.want)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
