package usage

import (
	"context"
	"encoding/json"
	"log/slog"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/telemetry"
)

// Audit actions (API.md, "Audit").
const (
	ActionKeyCreated       = "key.created"
	ActionKeyRevoked       = "key.revoked"
	ActionAuthRefused      = "auth.refused"
	ActionTokenIssued      = "token.issued"
	ActionTokenRefused     = "token.refused"
	ActionModuleUploaded   = "module.uploaded"
	ActionModuleDeleted    = "module.deleted"
	ActionWebSignIn        = "web.signin"
	ActionRateLimitLimited = "ratelimit.limited"
	ActionQuotaExceeded    = "quota.exceeded"
)

// Actions lists every audit action, for validating filters.
var Actions = []string{
	ActionKeyCreated, ActionKeyRevoked, ActionAuthRefused, ActionTokenIssued, ActionTokenRefused,
	ActionModuleUploaded, ActionModuleDeleted, ActionWebSignIn, ActionRateLimitLimited, ActionQuotaExceeded,
}

// Audit outcomes: the act was done, failed, or was refused by a rule.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeDenied  = "denied"
)

// AuditRetention is how long audit events are kept: a year, a fixed figure
// rather than USAGE_RETENTION, since security reviews look further back
// than billing does.
const AuditRetention = 365 * 24 * time.Hour

// Event is a security-relevant act, as a caller reports it.
type Event struct {
	Action  string
	Outcome string
	// KeyID and Owner say who acted, when known.
	KeyID    uuid.UUID
	Owner    string
	TargetID string
	ClientIP string
	// RequestID defaults to the request id of the context.
	RequestID string
	// Detail is a few words of context: a refusal's reason, a key's role.
	// Never a secret: no key, token, salt or password, not even in part
	// (a key's display prefix is the most allowed).
	Detail map[string]any
}

// AuditWriter is what the auditor needs of the store.
type AuditWriter interface {
	InsertAuditEvents(ctx context.Context, events []store.AuditEvent) error
}

// Limits that keep an event within the audit_events table's checks.
const (
	maxDetailBytes = 2048
	maxTargetLen   = 128
	maxIPLen       = 64
	maxRequestID   = 128
)

var validAction = regexp.MustCompile(`^[a-z_]+\.[a-z_]+$`)

// Coalescing: refusals come in floods (a client retrying a revoked key, a
// script hammering past its rate limit). Identical refusals (same action,
// outcome, client address, key and reason) within coalesceWindow of the
// first are counted, not recorded one by one: the first is recorded at
// once, and when the window closes one more event with detail.repeats
// says how many followed it. Logs and table stay readable, and a flood
// cannot fill the queue that the other events need.
const (
	coalesceWindow = time.Second
	maxBursts      = 10_000
)

var coalesced = map[string]bool{
	ActionAuthRefused: true, ActionTokenRefused: true, ActionRateLimitLimited: true, ActionQuotaExceeded: true,
	ActionWebSignIn: true,
}

type burstKey struct {
	action, outcome, ip, reason, prefix string
	key                                 uuid.UUID
}

type burst struct {
	start   time.Time
	repeats int
	last    store.AuditEvent // the latest repeat, the summary's template
}

// Auditor records audit events: one structured log line each, at once,
// and a row in audit_events written in batches off the request path. An
// event that cannot be queued is never lost silently: it is counted in
// wasmwiz_audit_dropped_total and logged at error level, whole.
type Auditor struct {
	rec *Recorder[store.AuditEvent]
	log *slog.Logger
	now func() time.Time

	mu     sync.Mutex
	bursts map[burstKey]*burst

	startOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// NewAuditor returns a stopped auditor; Start starts it. Its metrics are
// wasmwiz_audit_queue_depth, wasmwiz_audit_dropped_total,
// wasmwiz_audit_written_total and wasmwiz_audit_write_errors_total.
func NewAuditor(st AuditWriter, log *slog.Logger, reg prometheus.Registerer, o Options) (*Auditor, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rec, err := NewRecorder("audit", st.InsertAuditEvents, log, reg, o)
	if err != nil {
		return nil, err
	}
	a := &Auditor{rec: rec, log: log, now: time.Now, bursts: map[burstKey]*burst{},
		stop: make(chan struct{}), done: make(chan struct{})}
	rec.onDrop = func(events []store.AuditEvent, reason string) {
		for _, e := range events {
			a.logDropped(context.Background(), e, reason)
		}
	}
	return a, nil
}

// Start starts writing, and closing coalescing windows. It is idempotent.
func (a *Auditor) Start() {
	a.startOnce.Do(func() {
		a.rec.Start()
		go a.sweep()
	})
}

// Record logs an event and queues it for writing. It never blocks.
func (a *Auditor) Record(ctx context.Context, e Event) {
	now := a.now()
	ev := a.toStore(ctx, e, now)
	if !validAction.MatchString(ev.Action) {
		a.log.ErrorContext(ctx, "audit event with an invalid action not recorded", eventAttrs(ev)...)
		return
	}
	if coalesced[ev.Action] && a.coalesce(ev, e, now) {
		return
	}
	a.emit(ctx, ev)
}

// Dropped is how many events were lost (each also logged at error level).
func (a *Auditor) Dropped() uint64 { return a.rec.Dropped() }

// Flush closes every coalescing window and writes everything queued.
func (a *Auditor) Flush(ctx context.Context) error {
	a.closeBursts(time.Time{})
	return a.rec.Flush(ctx)
}

// Close records the open coalescing windows, then writes everything queued
// as Recorder.Close does. Call it after the last Record.
func (a *Auditor) Close(ctx context.Context) error {
	a.Start()
	a.closeOnce.Do(func() {
		close(a.stop)
		<-a.done
	})
	a.closeBursts(time.Time{})
	return a.rec.Close(ctx)
}

func (a *Auditor) toStore(ctx context.Context, e Event, now time.Time) store.AuditEvent {
	reqID := e.RequestID
	if reqID == "" {
		reqID = telemetry.RequestID(ctx)
	}
	ev := store.AuditEvent{
		ID: store.NewAuditEventID(now), At: now.UTC(), KeyID: e.KeyID, Owner: e.Owner, Action: e.Action,
		TargetID: clip(e.TargetID, maxTargetLen), Outcome: e.Outcome, ClientIP: clip(e.ClientIP, maxIPLen),
		RequestID: clip(reqID, maxRequestID),
	}
	switch ev.Outcome {
	case OutcomeSuccess, OutcomeFailure, OutcomeDenied:
	default:
		ev.Outcome = OutcomeFailure
	}
	ev.Detail = encodeDetail(e.Detail)
	return ev
}

func encodeDetail(d map[string]any) []byte {
	if len(d) == 0 {
		return nil
	}
	b, err := json.Marshal(d)
	if err != nil || len(b) > maxDetailBytes {
		return []byte(`{"detail_omitted":true}`)
	}
	return b
}

// clip cuts s to at most n bytes, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// coalesce reports whether ev is a repeat within an open window, counted
// instead of recorded.
func (a *Auditor) coalesce(ev store.AuditEvent, e Event, now time.Time) bool {
	reason, _ := e.Detail["reason"].(string)
	prefix, _ := e.Detail["key_prefix"].(string)
	k := burstKey{action: ev.Action, outcome: ev.Outcome, ip: ev.ClientIP, reason: reason, prefix: prefix, key: ev.KeyID}
	a.mu.Lock()
	b, ok := a.bursts[k]
	if ok && now.Sub(b.start) < coalesceWindow {
		b.repeats++
		b.last = ev
		a.mu.Unlock()
		return true
	}
	var summary *store.AuditEvent
	if ok {
		summary = b.summary()
		delete(a.bursts, k)
	}
	if len(a.bursts) < maxBursts {
		a.bursts[k] = &burst{start: now}
	}
	a.mu.Unlock()
	if summary != nil {
		a.emit(context.Background(), *summary)
	}
	return false
}

// summary is the event that stands for a window's repeats, or nil.
func (b *burst) summary() *store.AuditEvent {
	if b.repeats == 0 {
		return nil
	}
	ev := b.last
	var d map[string]any
	if len(ev.Detail) > 0 {
		_ = json.Unmarshal(ev.Detail, &d)
	}
	if d == nil {
		d = map[string]any{}
	}
	d["repeats"] = b.repeats
	d["first_at"] = b.start.UTC().Format(time.RFC3339Nano)
	ev.Detail = encodeDetail(d)
	return &ev
}

// closeBursts records the summaries of windows that closed before cutoff
// (of every window when cutoff is zero).
func (a *Auditor) closeBursts(cutoff time.Time) {
	var out []store.AuditEvent
	a.mu.Lock()
	for k, b := range a.bursts {
		if cutoff.IsZero() || b.start.Add(coalesceWindow).Before(cutoff) {
			if s := b.summary(); s != nil {
				out = append(out, *s)
			}
			delete(a.bursts, k)
		}
	}
	a.mu.Unlock()
	slices.SortFunc(out, func(x, y store.AuditEvent) int { return x.At.Compare(y.At) })
	for _, ev := range out {
		a.emit(context.Background(), ev)
	}
}

func (a *Auditor) sweep() {
	defer close(a.done)
	t := time.NewTicker(coalesceWindow)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			a.closeBursts(a.now())
		}
	}
}

// emit logs an event and queues it.
func (a *Auditor) emit(ctx context.Context, ev store.AuditEvent) {
	ctx = withRequestID(ctx, ev.RequestID)
	a.log.InfoContext(ctx, "audit", eventAttrs(ev)...)
	if !a.rec.Add(ev) {
		a.logDropped(ctx, ev, "queue full or closed")
	}
}

func (a *Auditor) logDropped(ctx context.Context, ev store.AuditEvent, reason string) {
	ctx = withRequestID(ctx, ev.RequestID)
	a.log.ErrorContext(ctx, "audit event dropped", append(eventAttrs(ev), "reason", reason)...)
}

// withRequestID makes the logger's context handler name the event's
// request id, also for events logged outside their request.
func withRequestID(ctx context.Context, id string) context.Context {
	if id == "" || telemetry.RequestID(ctx) != "" {
		return ctx
	}
	return telemetry.WithRequestID(ctx, id)
}

func eventAttrs(ev store.AuditEvent) []any {
	attrs := []any{"action", ev.Action, "outcome", ev.Outcome, "event_id", ev.ID.String()}
	if ev.KeyID != uuid.Nil {
		attrs = append(attrs, "key_id", ev.KeyID.String())
	}
	if ev.Owner != "" {
		attrs = append(attrs, "owner", ev.Owner)
	}
	if ev.TargetID != "" {
		attrs = append(attrs, "target_id", ev.TargetID)
	}
	if ev.ClientIP != "" {
		attrs = append(attrs, "client_ip", ev.ClientIP)
	}
	if len(ev.Detail) > 0 {
		attrs = append(attrs, "detail", json.RawMessage(ev.Detail))
	}
	return attrs
}
