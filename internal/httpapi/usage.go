package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/usage"
)

// UsageRecorder takes usage records off the request path
// (usage.Recorder). Add must not block.
type UsageRecorder interface {
	Add(rec store.Execution) bool
}

// recordExecution hands the usage recorder the record of an execution the
// api tried to send: what the worker replied, or why no reply came.
// Requests that never reached a worker (no worker subscribed, metadata too
// large to send) are not executions and leave no record.
func (s *Server) recordExecution(c echo.Context, p auth.Principal, execID uuid.UUID, ex execution, sent time.Time,
	reply protocol.Reply, err error) {
	if s.usage == nil {
		return
	}
	rec := store.Execution{
		ID: execID, Owner: p.Owner, KeyID: p.KeyID, ModuleID: ex.module.ID, BytesIn: int64(len(ex.stdin)),
		RequestID: requestIDOf(c), CreatedAt: sent.UTC(),
	}
	switch {
	case errors.Is(err, protocol.ErrNoWorkers), errors.Is(err, protocol.ErrTooLarge):
		return
	case err != nil && c.Request().Context().Err() != nil:
		rec.Status = usage.StatusCanceled
	case errors.Is(err, protocol.ErrTimeout):
		rec.Status = usage.StatusWorkerTimeout
	case err != nil:
		rec.Status = usage.StatusWorkerError
	case reply.Failure != nil:
		rec.Status = usage.StatusWorkerError
		if reply.Failure.Code == protocol.FailureModuleNotFound || reply.Failure.Code == protocol.FailureInvalidModule {
			rec.Status = usage.StatusRejected
		}
		rec.Worker, rec.QueueMS = reply.Worker, ms(reply.QueueTime)
	default:
		// WASI exit codes are uint32; an integer column keeps their bits.
		code := int32(reply.ExitCode)
		rec.Status, rec.ExitCode, rec.Worker = reply.Status, &code, reply.Worker
		rec.DurationMS, rec.QueueMS = ms(reply.Duration), ms(reply.QueueTime)
		rec.MemoryPeakBytes = int64(min(reply.MemoryPeak, 1<<62))
		rec.BytesOut = int64(len(reply.Stdout) + len(reply.Stderr))
	}
	s.usage.Add(rec)
}

// Bounds of GET /api/usage.
const (
	usageDefaultRange = 24 * time.Hour
	// usageMaxRange bounds one request's scan: a quarter and a bit, more
	// than the default USAGE_RETENTION keeps anyway.
	usageMaxRange  = 93 * 24 * time.Hour
	usageTopModule = 20
)

type usageDurationJSON struct {
	Total float64 `json:"total"`
	P50   float64 `json:"p50"`
	P95   float64 `json:"p95"`
}

type moduleUsageJSON struct {
	ModuleID string `json:"module_id"`
	// Name is null when the module has been deleted since.
	Name       *string `json:"name"`
	Executions int64   `json:"executions"`
}

type usageReportJSON struct {
	Owner      string            `json:"owner"`
	Since      time.Time         `json:"since"`
	Until      time.Time         `json:"until"`
	Executions int64             `json:"executions"`
	ByStatus   map[string]int64  `json:"by_status"`
	DurationMS usageDurationJSON `json:"duration_ms"`
	BytesIn    int64             `json:"bytes_in"`
	BytesOut   int64             `json:"bytes_out"`
	ByModule   []moduleUsageJSON `json:"by_module"`
}

// getUsage answers GET /api/usage: the caller's owner's figures over
// [since, until), by default the last 24 hours, at most usageMaxRange. An
// admin may ask for another owner's with owner=; a user key asking for
// another owner is 403 forbidden.
func (s *Server) getUsage(c echo.Context) error {
	p := principalOf(c)
	owner := p.Owner
	if o := c.QueryParam("owner"); o != "" && o != p.Owner {
		if !p.IsAdmin() {
			return fmt.Errorf("%w: only an admin key may read another owner's usage", auth.ErrForbidden)
		}
		if len(o) > 64 {
			return invalidRequest("owner must be at most 64 characters")
		}
		owner = o
	}
	since, until, err := timeParams(c)
	if err != nil {
		return err
	}
	switch {
	case since.IsZero() && until.IsZero():
		until = time.Now().UTC()
		since = until.Add(-usageDefaultRange)
	case since.IsZero():
		since = until.Add(-usageDefaultRange)
	case until.IsZero():
		until = time.Now().UTC()
	}
	if !until.After(since) {
		return invalidRequest("until must be after since")
	}
	if until.Sub(since) > usageMaxRange {
		return invalidRequest("since to until must span at most %d days", int(usageMaxRange/(24*time.Hour)))
	}
	sum, err := s.store.Usage(c.Request().Context(), store.Owner(owner), since, until, usageTopModule)
	if err != nil {
		return err
	}
	out := usageReportJSON{
		Owner: owner, Since: since, Until: until, Executions: sum.Executions, ByStatus: sum.ByStatus,
		DurationMS: usageDurationJSON{Total: sum.DurationTotalMS, P50: sum.DurationP50MS, P95: sum.DurationP95MS},
		BytesIn:    sum.BytesIn, BytesOut: sum.BytesOut,
		ByModule: make([]moduleUsageJSON, 0, len(sum.ByModule)),
	}
	for _, m := range sum.ByModule {
		out.ByModule = append(out.ByModule, moduleUsageJSON{ModuleID: m.ModuleID.String(), Name: m.Name, Executions: m.Executions})
	}
	return c.JSON(http.StatusOK, out)
}

// timeParams reads the optional RFC 3339 ?since= and ?until=, in UTC; an
// absent one is the zero time.
func timeParams(c echo.Context) (since, until time.Time, err error) {
	parse := func(name string) (time.Time, error) {
		v := c.QueryParam(name)
		if v == "" {
			return time.Time{}, nil
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return time.Time{}, invalidRequest("%s must be an RFC 3339 time such as 2025-01-02T15:04:05Z", name)
		}
		return t.UTC(), nil
	}
	if since, err = parse("since"); err != nil {
		return time.Time{}, time.Time{}, err
	}
	if until, err = parse("until"); err != nil {
		return time.Time{}, time.Time{}, err
	}
	return since, until, nil
}
