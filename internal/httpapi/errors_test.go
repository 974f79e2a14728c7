package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/store"
)

// TestErrorTable pins the mapping of errors to the contract's statuses and
// codes: changing one is changing the API.
func TestErrorTable(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
		retry  bool
	}{
		{fmt.Errorf("send: %w", protocol.ErrNoWorkers), 503, "no_workers", true},
		{fmt.Errorf("wait: %w", protocol.ErrTimeout), 504, "worker_timeout", false},
		{fmt.Errorf("wait: %w", protocol.ErrWorkerLost), 502, "worker_error", false},
		{fmt.Errorf("ping: %w", store.ErrUnavailable), 503, "database_unavailable", true},
		{fmt.Errorf("get: %w", store.ErrNotFound), 404, "not_found", false},
		{context.DeadlineExceeded, 503, "service_unavailable", true},
		{echo.ErrNotFound, 404, "not_found", false},
		{echo.ErrMethodNotAllowed, 405, "method_not_allowed", false},
		{echo.NewHTTPError(http.StatusRequestEntityTooLarge), 413, "request_too_large", false},
		{&http.MaxBytesError{Limit: 10}, 413, "request_too_large", false},
		{invalidRequest("x"), 400, "invalid_request", false},
		{fmt.Errorf("wrapped: %w", newError(404, "module_not_found", "m")), 404, "module_not_found", false},
		{errors.New("anything else"), 500, "internal_error", false},
		{echo.NewHTTPError(http.StatusInternalServerError, "secret detail"), 500, "internal_error", false},
	}
	for _, tt := range tests {
		got := toAPIError(tt.err)
		if got.Status != tt.status || got.Code != tt.code || (got.RetryAfter > 0) != tt.retry {
			t.Errorf("toAPIError(%v) = %d %s retry %d; want %d %s retry %v", tt.err, got.Status, got.Code, got.RetryAfter, tt.status, tt.code, tt.retry)
		}
		if got.Status == 500 && got.Message != "internal error" {
			t.Errorf("toAPIError(%v) message %q; want the generic one", tt.err, got.Message)
		}
	}
}
