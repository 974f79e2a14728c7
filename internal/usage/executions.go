package usage

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmwiz/wasmwiz/internal/store"
)

// ExecutionWriter is what the usage recorder needs of the store.
type ExecutionWriter interface {
	InsertExecutions(ctx context.Context, recs []store.Execution) error
}

// Statuses of executions that were sent to a worker but in which the
// module did not run to one of the runner's own statuses (API.md's ok,
// exit, trap, timeout, memory_limit). Requests refused before sending (bad
// input, quota, no workers) are not executions and have no record.
const (
	// StatusRejected: the worker refused the module (gone since, or not
	// compilable there).
	StatusRejected = "rejected"
	// StatusWorkerTimeout: no reply within the time limit plus the grace.
	StatusWorkerTimeout = "worker_timeout"
	// StatusWorkerError: the worker, or the way to it, failed.
	StatusWorkerError = "worker_error"
	// StatusCanceled: the client went away before the reply; the worker
	// may still have run the module.
	StatusCanceled = "canceled"
)

// NewExecutionRecorder returns the recorder of usage records, with the
// metrics wasmwiz_usage_queue_depth, wasmwiz_usage_dropped_total,
// wasmwiz_usage_written_total and wasmwiz_usage_write_errors_total.
func NewExecutionRecorder(st ExecutionWriter, log *slog.Logger, reg prometheus.Registerer, o Options) (*Recorder[store.Execution], error) {
	return NewRecorder("usage", st.InsertExecutions, log, reg, o)
}
