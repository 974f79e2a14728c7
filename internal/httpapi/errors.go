package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/store"
)

// Error is what a client sees of a failure: a status, a stable snake_case
// code from API.md and a message for humans. Handlers return it (or any
// error); only the error handler writes error bodies.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfter, when positive, is sent as Retry-After (whole seconds).
	RetryAfter int
	// Err is the cause, logged but never shown.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func newError(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func invalidRequest(format string, args ...any) *Error {
	return newError(http.StatusBadRequest, "invalid_request", format, args...)
}

// domainErrors maps errors detected below the edge to their HTTP meaning:
// the one table of the API's error contract (see errors_test.go).
var domainErrors = []struct {
	target  error
	status  int
	code    string
	message string
	retry   int
}{
	{auth.ErrUnauthenticated, http.StatusUnauthorized, "unauthorized", "missing or invalid credentials", 0},
	{protocol.ErrNoWorkers, http.StatusServiceUnavailable, "no_workers", "no worker is available to run the module; try again shortly", 1},
	{protocol.ErrTimeout, http.StatusGatewayTimeout, "worker_timeout", "no worker replied within the time limit plus a grace", 0},
	{protocol.ErrWorkerLost, http.StatusBadGateway, "worker_error", "the worker running the execution stopped answering (it may have crashed); the execution did not finish", 0},
	{store.ErrUnavailable, http.StatusServiceUnavailable, "database_unavailable", "the database is unavailable; try again shortly", 1},
	{store.ErrNotFound, http.StatusNotFound, "not_found", "not found", 0},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, "service_unavailable", "the request took too long; try again shortly", 1},
}

// echoCodes names Echo's own errors (routing, body limits, binding).
var echoCodes = map[int]string{
	http.StatusBadRequest:            "invalid_request",
	http.StatusUnauthorized:          "unauthorized",
	http.StatusForbidden:             "forbidden",
	http.StatusNotFound:              "not_found",
	http.StatusMethodNotAllowed:      "method_not_allowed",
	http.StatusRequestEntityTooLarge: "request_too_large",
	http.StatusUnsupportedMediaType:  "unsupported_media_type",
	http.StatusTooManyRequests:       "rate_limited",
	http.StatusServiceUnavailable:    "service_unavailable",
}

// toAPIError turns any error into the one the client sees.
func toAPIError(err error) *Error {
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return apiErr
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code, ok := echoCodes[he.Code]
		if !ok {
			code = "internal_error"
		}
		msg := http.StatusText(he.Code)
		switch he.Code {
		case http.StatusNotFound:
			msg = "no such route"
		case http.StatusMethodNotAllowed:
			msg = "method not allowed on this route"
		}
		if he.Code >= 500 {
			return &Error{Status: http.StatusInternalServerError, Code: "internal_error", Message: "internal error", Err: err}
		}
		return &Error{Status: he.Code, Code: code, Message: msg, Err: err}
	}
	if errors.Is(err, auth.ErrForbidden) {
		// The reason names a rule of API.md, never a secret.
		msg := strings.TrimPrefix(err.Error(), auth.ErrForbidden.Error()+": ")
		return &Error{Status: http.StatusForbidden, Code: "forbidden", Message: msg, Err: err}
	}
	var ve *auth.ValidationError
	if errors.As(err, &ve) {
		return &Error{Status: http.StatusBadRequest, Code: "invalid_request", Message: ve.Error(), Err: err}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: "request_too_large",
			Message: fmt.Sprintf("request body is larger than %d bytes", mbe.Limit), Err: err}
	}
	for _, d := range domainErrors {
		if errors.Is(err, d.target) {
			return &Error{Status: d.status, Code: d.code, Message: d.message, RetryAfter: d.retry, Err: err}
		}
	}
	return &Error{Status: http.StatusInternalServerError, Code: "internal_error", Message: "internal error", Err: err}
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// statusClientClosed is nginx's status for a request its client abandoned;
// only logs and metrics see it.
const statusClientClosed = 499

// handleError is Echo's HTTPErrorHandler: every error, from a handler, a
// middleware, Echo's router or a recovered panic, leaves through here.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	apiErr := toAPIError(err)
	ctx := c.Request().Context()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		// The client went away mid-request: not a failure of the server,
		// and not one a client may use to fill the logs and 5xx alerts.
		apiErr = &Error{Status: statusClientClosed, Code: "client_closed_request", Message: "the client closed the request", Err: err}
	}
	if apiErr.Status >= 500 {
		s.log.ErrorContext(ctx, "request failed", "status", apiErr.Status, "code", apiErr.Code, "error", err.Error())
	} else {
		s.log.DebugContext(ctx, "request refused", "status", apiErr.Status, "code", apiErr.Code, "error", err.Error())
	}
	h := c.Response().Header()
	if apiErr.RetryAfter > 0 {
		h.Set("Retry-After", fmt.Sprint(apiErr.RetryAfter))
	}
	if apiErr.Status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", "Bearer")
	}
	body := errorBody{errorDetail{Code: apiErr.Code, Message: apiErr.Message, RequestID: requestIDOf(c)}}
	if c.Request().Method == http.MethodHead {
		err = c.NoContent(apiErr.Status)
	} else {
		err = c.JSON(apiErr.Status, body)
	}
	if err != nil {
		s.log.ErrorContext(ctx, "write error response", "error", err)
	}
}
