package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// AuditEvent is one security-relevant event. Empty strings and uuid.Nil
// are stored as NULL.
type AuditEvent struct {
	// ID must come from NewAuditEventID(At): queries turn time ranges into
	// id ranges.
	ID uuid.UUID
	At time.Time
	// KeyID and Owner say who acted, when known.
	KeyID     uuid.UUID
	Owner     string
	Action    string
	TargetID  string
	Outcome   string
	ClientIP  string
	RequestID string
	// Detail is a small JSON object; nil means {}.
	Detail []byte
}

// NewAuditEventID returns a UUIDv7 whose millisecond timestamp is at's, so
// that an event's id orders like its time (at millisecond precision).
func NewAuditEventID(at time.Time) uuid.UUID {
	id := uuid.Must(uuid.NewV7())
	setMillis(&id, at)
	return id
}

// idFloor is the smallest UUIDv7 of at's millisecond: every v7 id of that
// millisecond or later compares at least as large (PostgreSQL compares
// uuids bytewise).
func idFloor(at time.Time) uuid.UUID {
	var id uuid.UUID
	setMillis(&id, at)
	id[6] = 0x70 // version 7
	id[8] = 0x80 // RFC 4122 variant
	return id
}

func setMillis(id *uuid.UUID, at time.Time) {
	ms := max(at.UnixMilli(), 0)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(ms))
	copy(id[0:6], b[2:8])
}

// InsertAuditEvents writes events in one statement, skipping ids already
// written so that a batch can be retried.
func (s *Store) InsertAuditEvents(ctx context.Context, events []AuditEvent) error {
	if len(events) == 0 {
		return nil
	}
	n := len(events)
	var (
		ids      = make([]uuid.UUID, n)
		ats      = make([]time.Time, n)
		keyIDs   = make([]pgtype.UUID, n)
		owners   = make([]string, n)
		actions  = make([]string, n)
		targets  = make([]string, n)
		outcomes = make([]string, n)
		ips      = make([]string, n)
		requests = make([]string, n)
		details  = make([]string, n)
	)
	for i, e := range events {
		ids[i], ats[i], keyIDs[i], owners[i], actions[i] = e.ID, e.At, nullUUID(e.KeyID), e.Owner, e.Action
		targets[i], outcomes[i], ips[i], requests[i] = e.TargetID, e.Outcome, e.ClientIP, e.RequestID
		details[i] = "{}"
		if len(e.Detail) > 0 {
			details[i] = string(e.Detail)
		}
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO audit_events (id, at, key_id, owner, action, target_id, outcome, client_ip, request_id, detail)
		SELECT id, at, key_id, NULLIF(owner, ''), action, NULLIF(target_id, ''), outcome,
			NULLIF(client_ip, ''), NULLIF(request_id, ''), detail::jsonb
		FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
			$8::text[], $9::text[], $10::text[])
			AS u(id, at, key_id, owner, action, target_id, outcome, client_ip, request_id, detail)
		ON CONFLICT (id) DO NOTHING`,
		ids, ats, keyIDs, owners, actions, targets, outcomes, ips, requests, details)
	if err != nil {
		return fmt.Errorf("insert %d audit events: %w", n, wrap(err))
	}
	return nil
}

// AuditQuery selects audit events. Zero fields do not filter.
type AuditQuery struct {
	Owner  string
	Action string
	// Since and Until bound At to [Since, Until).
	Since, Until time.Time
	// Before is the last id of the previous page (uuid.Nil: the first).
	Before uuid.UUID
	Limit  int
}

// ListAuditEvents returns up to q.Limit events, newest first. Every filter
// is also an id range, so a page is a range scan of the primary key, or of
// the (owner, id) or (action, id) index.
func (s *Store) ListAuditEvents(ctx context.Context, q AuditQuery) ([]AuditEvent, error) {
	conds := []string{"TRUE"}
	args := pgx.NamedArgs{"limit": q.Limit}
	if q.Owner != "" {
		conds = append(conds, "owner = @owner")
		args["owner"] = q.Owner
	}
	if q.Action != "" {
		conds = append(conds, "action = @action")
		args["action"] = q.Action
	}
	if !q.Since.IsZero() {
		conds = append(conds, "id >= @since_id", "at >= @since")
		args["since_id"], args["since"] = idFloor(q.Since), q.Since
	}
	if !q.Until.IsZero() {
		conds = append(conds, "id < @until_id", "at < @until")
		args["until_id"], args["until"] = idFloor(q.Until.Add(time.Millisecond)), q.Until
	}
	if q.Before != uuid.Nil {
		conds = append(conds, "id < @before")
		args["before"] = q.Before
	}
	rows, err := s.pool.Query(ctx, `SELECT id, at, key_id, coalesce(owner, ''), action, coalesce(target_id, ''),
			outcome, coalesce(client_ip, ''), coalesce(request_id, ''), detail
		FROM audit_events WHERE `+strings.Join(conds, " AND ")+`
		ORDER BY id DESC LIMIT @limit`, args)
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", wrap(err))
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditEvent, error) {
		var e AuditEvent
		var key pgtype.UUID
		err := r.Scan(&e.ID, &e.At, &key, &e.Owner, &e.Action, &e.TargetID, &e.Outcome, &e.ClientIP, &e.RequestID, &e.Detail)
		if key.Valid {
			e.KeyID = key.Bytes
		}
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", wrap(err))
	}
	return events, nil
}

// DeleteAuditEventsBefore deletes up to limit events older than before
// (oldest first) and says how many it deleted.
func (s *Store) DeleteAuditEventsBefore(ctx context.Context, before time.Time, limit int) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM audit_events WHERE id = ANY(ARRAY(
		SELECT id FROM audit_events WHERE id < $1 AND at < $2 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED))`,
		idFloor(before), before, limit)
	if err != nil {
		return 0, fmt.Errorf("delete audit events before %s: %w", before.Format(time.RFC3339), wrap(err))
	}
	return tag.RowsAffected(), nil
}
