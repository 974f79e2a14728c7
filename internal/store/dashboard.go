package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Dashboard is what the web dashboard shows of a scope: the executions
// figures come from Usage, so that the page and GET /api/usage agree.
type Dashboard struct {
	// Modules counts kept modules (ad-hoc ones excluded, as in lists).
	Modules int64
	Usage   UsageSummary
	// Buckets split [since, until) into equal slices, oldest first.
	Buckets []ExecutionBucket
	// Recent are the latest executions, newest first.
	Recent []RecentExecution
}

// ExecutionBucket counts the executions of one slice of time.
type ExecutionBucket struct {
	Start time.Time
	Total int64
	// Failed counts every status but ok.
	Failed int64
}

// RecentExecution is one line of the dashboard's latest executions.
type RecentExecution struct {
	ID       uuid.UUID
	Owner    string
	ModuleID *uuid.UUID
	// ModuleName is nil when the module was deleted (or ad-hoc and pruned).
	ModuleName *string
	Status     string
	ExitCode   *int32
	DurationMS float64
	CreatedAt  time.Time
}

// Dashboard gathers the dashboard of scope over [since, until): the usage
// summary, buckets equal slices of executions, and the recent latest
// executions (whenever they ran). Every statement is a range scan of the
// executions' (owner, created_at) or (created_at) index, or of the modules'
// partial index.
func (s *Store) Dashboard(ctx context.Context, scope Scope, since, until time.Time, buckets, recent int) (Dashboard, error) {
	if buckets < 1 || !until.After(since) {
		return Dashboard{}, fmt.Errorf("dashboard: want at least one bucket over a non-empty range")
	}
	usage, err := s.Usage(ctx, scope, since, until, 0)
	if err != nil {
		return Dashboard{}, fmt.Errorf("dashboard: %w", err)
	}
	d := Dashboard{Usage: usage, Buckets: make([]ExecutionBucket, buckets)}
	width := until.Sub(since) / time.Duration(buckets)
	for i := range d.Buckets {
		d.Buckets[i].Start = since.Add(time.Duration(i) * width).UTC()
	}

	args := pgx.NamedArgs{
		"owner": scope.owner, "since": since, "until": until,
		"lo": float64(since.UnixMicro()) / 1e6, "hi": float64(until.UnixMicro()) / 1e6, "n": buckets, "recent": recent,
	}
	// Separate forms rather than one OR, so that each matches its index.
	owned := `owner = @owner`
	if scope.all {
		owned = `TRUE`
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT count(*) FROM modules WHERE expires_at IS NULL AND `+owned, args)
	// width_bucket numbers the slices 1..n; the range filter keeps it
	// there, since it is the same half-open range.
	b.Queue(`SELECT width_bucket(extract(epoch FROM created_at)::float8, @lo::float8, @hi::float8, @n::int) - 1 AS bucket,
			count(*), count(*) FILTER (WHERE status <> 'ok')
		FROM executions
		WHERE `+owned+` AND created_at >= @since AND created_at < @until
		GROUP BY bucket`, args)
	b.Queue(`SELECT e.id, e.owner, e.module_id, m.name, e.status, e.exit_code, e.duration_ms, e.created_at
		FROM (SELECT * FROM executions WHERE `+owned+` ORDER BY created_at DESC, id DESC LIMIT @recent) e
		LEFT JOIN modules m ON m.id = e.module_id
		ORDER BY e.created_at DESC, e.id DESC`, args)
	br := s.pool.SendBatch(ctx, b)
	defer br.Close()

	if err := br.QueryRow().Scan(&d.Modules); err != nil {
		return Dashboard{}, fmt.Errorf("dashboard modules: %w", wrap(err))
	}
	rows, err := br.Query()
	if err != nil {
		return Dashboard{}, fmt.Errorf("dashboard buckets: %w", wrap(err))
	}
	for rows.Next() {
		var i int
		var total, failed int64
		if err := rows.Scan(&i, &total, &failed); err != nil {
			rows.Close()
			return Dashboard{}, fmt.Errorf("dashboard buckets: %w", wrap(err))
		}
		if i >= 0 && i < buckets {
			d.Buckets[i].Total, d.Buckets[i].Failed = total, failed
		}
	}
	if err := rows.Err(); err != nil {
		return Dashboard{}, fmt.Errorf("dashboard buckets: %w", wrap(err))
	}
	rows, err = br.Query()
	if err != nil {
		return Dashboard{}, fmt.Errorf("dashboard recent executions: %w", wrap(err))
	}
	d.Recent, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (RecentExecution, error) {
		var e RecentExecution
		err := r.Scan(&e.ID, &e.Owner, &e.ModuleID, &e.ModuleName, &e.Status, &e.ExitCode, &e.DurationMS, &e.CreatedAt)
		return e, err
	})
	if err != nil {
		return Dashboard{}, fmt.Errorf("dashboard recent executions: %w", wrap(err))
	}
	return d, nil
}
