package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// Execution is one usage record: an execution the api sent to a worker.
type Execution struct {
	ID    uuid.UUID
	Owner string
	// KeyID is uuid.Nil when the caller had no key (development).
	KeyID    uuid.UUID
	ModuleID uuid.UUID
	// Status is the module's (ok, exit, trap, timeout, memory_limit) when
	// it ran, else the platform's word for why it did not (see RanStatuses).
	Status string
	// ExitCode is nil when the module did not run.
	ExitCode        *int32
	DurationMS      float64
	QueueMS         float64
	MemoryPeakBytes int64
	BytesIn         int64
	BytesOut        int64
	Worker          string
	RequestID       string
	CreatedAt       time.Time
}

// RanStatuses are the statuses of executions in which the module ran; only
// they count towards the duration figures of a usage summary, so that a
// platform failure (with no duration of its own) does not drag p50 to zero.
var RanStatuses = []string{"ok", "exit", "trap", "timeout", "memory_limit"}

// InsertExecutions writes usage records in one statement. Records already
// written (same id) are skipped, so that a batch whose outcome was unknown
// (the connection died around the commit) can be written again safely; that
// is why this is a multi-row insert rather than COPY, which cannot skip.
func (s *Store) InsertExecutions(ctx context.Context, recs []Execution) error {
	if len(recs) == 0 {
		return nil
	}
	n := len(recs)
	var (
		ids       = make([]uuid.UUID, n)
		owners    = make([]string, n)
		keyIDs    = make([]pgtype.UUID, n)
		moduleIDs = make([]pgtype.UUID, n)
		statuses  = make([]string, n)
		exitCodes = make([]*int32, n)
		durations = make([]float64, n)
		queues    = make([]float64, n)
		memories  = make([]int64, n)
		bytesIn   = make([]int64, n)
		bytesOut  = make([]int64, n)
		workers   = make([]string, n)
		requests  = make([]string, n)
		created   = make([]time.Time, n)
	)
	for i, r := range recs {
		ids[i], owners[i], statuses[i], exitCodes[i] = r.ID, r.Owner, r.Status, r.ExitCode
		keyIDs[i], moduleIDs[i] = nullUUID(r.KeyID), nullUUID(r.ModuleID)
		durations[i], queues[i], memories[i] = r.DurationMS, r.QueueMS, r.MemoryPeakBytes
		bytesIn[i], bytesOut[i], workers[i], requests[i], created[i] = r.BytesIn, r.BytesOut, r.Worker, r.RequestID, r.CreatedAt
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO executions (id, owner, key_id, module_id, status, exit_code, duration_ms, queue_ms,
			memory_peak_bytes, bytes_in, bytes_out, worker, request_id, created_at)
		SELECT id, owner, key_id, module_id, status, exit_code, duration_ms, queue_ms,
			memory_peak_bytes, bytes_in, bytes_out, NULLIF(worker, ''), NULLIF(request_id, ''), created_at
		FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::integer[], $7::float8[],
			$8::float8[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::text[], $14::timestamptz[])
			AS u(id, owner, key_id, module_id, status, exit_code, duration_ms, queue_ms,
				memory_peak_bytes, bytes_in, bytes_out, worker, request_id, created_at)
		ON CONFLICT (id) DO NOTHING`,
		ids, owners, keyIDs, moduleIDs, statuses, exitCodes, durations, queues, memories, bytesIn, bytesOut,
		workers, requests, created)
	if err != nil {
		return fmt.Errorf("insert %d executions: %w", n, wrap(err))
	}
	return nil
}

func nullUUID(id uuid.UUID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: id != uuid.Nil} }

// UsageSummary is what a scope's executions in a time range add up to.
type UsageSummary struct {
	Executions int64
	ByStatus   map[string]int64
	// Duration figures cover the executions in which the module ran.
	DurationTotalMS float64
	DurationP50MS   float64
	DurationP95MS   float64
	BytesIn         int64
	BytesOut        int64
	// ByModule holds the most used modules, most executions first.
	ByModule []ModuleUsage
}

// ModuleUsage is one module's share of a usage summary.
type ModuleUsage struct {
	ModuleID uuid.UUID
	// Name is nil when the module has been deleted since.
	Name       *string
	Executions int64
}

// Usage sums the executions within scope created in [since, until), with
// the topModules most used modules. Two statements in one round trip, each
// a range scan of the (owner, created_at) index (or (created_at) for every
// owner).
func (s *Store) Usage(ctx context.Context, scope Scope, since, until time.Time, topModules int) (UsageSummary, error) {
	where := `created_at >= @since AND created_at < @until`
	args := pgx.NamedArgs{"since": since, "until": until, "ran": RanStatuses, "top": topModules}
	if !scope.all {
		where = `owner = @owner AND ` + where
		args["owner"] = scope.owner
	}
	b := &pgx.Batch{}
	// The empty grouping set is the grand total; it has a row even when
	// no execution matched.
	b.Queue(`SELECT GROUPING(status) = 1, status, count(*),
			coalesce(sum(duration_ms) FILTER (WHERE status = ANY(@ran)), 0),
			coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE status = ANY(@ran)), 0),
			coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE status = ANY(@ran)), 0),
			coalesce(sum(bytes_in), 0)::bigint, coalesce(sum(bytes_out), 0)::bigint
		FROM executions WHERE `+where+`
		GROUP BY GROUPING SETS ((status), ())`, args)
	b.Queue(`SELECT t.module_id, m.name, t.n FROM (
			SELECT module_id, count(*) AS n FROM executions
			WHERE `+where+` AND module_id IS NOT NULL
			GROUP BY module_id ORDER BY n DESC, module_id LIMIT @top) t
		LEFT JOIN modules m ON m.id = t.module_id
		ORDER BY t.n DESC, t.module_id`, args)
	br := s.pool.SendBatch(ctx, b)
	defer br.Close()

	sum := UsageSummary{ByStatus: map[string]int64{}}
	rows, err := br.Query()
	if err != nil {
		return UsageSummary{}, fmt.Errorf("usage totals: %w", wrap(err))
	}
	for rows.Next() {
		var (
			total              bool
			status             *string
			n, in, out         int64
			durTotal, p50, p95 float64
		)
		if err := rows.Scan(&total, &status, &n, &durTotal, &p50, &p95, &in, &out); err != nil {
			rows.Close()
			return UsageSummary{}, fmt.Errorf("usage totals: %w", wrap(err))
		}
		if !total {
			sum.ByStatus[*status] = n
			continue
		}
		sum.Executions, sum.DurationTotalMS, sum.DurationP50MS, sum.DurationP95MS = n, durTotal, p50, p95
		sum.BytesIn, sum.BytesOut = in, out
	}
	if err := rows.Err(); err != nil {
		return UsageSummary{}, fmt.Errorf("usage totals: %w", wrap(err))
	}

	rows, err = br.Query()
	if err != nil {
		return UsageSummary{}, fmt.Errorf("usage by module: %w", wrap(err))
	}
	sum.ByModule, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (ModuleUsage, error) {
		var m ModuleUsage
		err := r.Scan(&m.ModuleID, &m.Name, &m.Executions)
		return m, err
	})
	if err != nil {
		return UsageSummary{}, fmt.Errorf("usage by module: %w", wrap(err))
	}
	return sum, nil
}

// DeleteExecutionsBefore deletes up to limit usage records created before
// before, and says how many it deleted. SKIP LOCKED lets every api replica
// run the retention job at once without waiting on each other. The ids are
// gathered into an array first: "id IN (subquery)" plans as a hash join
// over the whole table, ANY(ARRAY(...)) as primary-key lookups.
func (s *Store) DeleteExecutionsBefore(ctx context.Context, before time.Time, limit int) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM executions WHERE id = ANY(ARRAY(
		SELECT id FROM executions WHERE created_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))`, before, limit)
	if err != nil {
		return 0, fmt.Errorf("delete executions before %s: %w", before.Format(time.RFC3339), wrap(err))
	}
	return tag.RowsAffected(), nil
}

// DeleteExpiredModules deletes up to limit ad-hoc modules whose expires_at
// has passed, and the bytes of each unless a kept module shares them (the
// same rule and locking as DeleteModule). It says how many modules it
// deleted.
func (s *Store) DeleteExpiredModules(ctx context.Context, now time.Time, limit int) (int64, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("delete expired modules: %w", wrap(err))
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit

	rows, err := tx.Query(ctx, `DELETE FROM modules WHERE id = ANY(ARRAY(
		SELECT id FROM modules WHERE expires_at < $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED))
		RETURNING sha256`, now, limit)
	if err != nil {
		return 0, fmt.Errorf("delete expired modules: %w", wrap(err))
	}
	shas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("delete expired modules: %w", wrap(err))
	}
	deleted := int64(len(shas))
	// Blob locks in one order, so that two replicas sharing blobs cannot
	// deadlock on them.
	slices.Sort(shas)
	for _, sha := range slices.Compact(shas) {
		if err := deleteOrphanBlob(ctx, tx, sha); err != nil {
			return 0, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit delete of expired modules: %w", wrap(err))
	}
	return deleted, nil
}
