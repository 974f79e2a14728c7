// Package telemetry is what operators see of both programs: logging that
// carries request ids through contexts (so every log line of a request, on
// the api and on the worker that ran it, names the same id), the Prometheus
// metrics, and pprof. It reads runner's cache statistics type and nothing
// else of the domain.
package telemetry

import (
	"context"
	"io"
	"log/slog"
	"regexp"

	"github.com/google/uuid"
)

type requestIDKey struct{}

// WithRequestID returns a context carrying a request id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id in ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// ValidRequestID reports whether a client-sent id may be kept (API.md:
// 1–128 characters of [A-Za-z0-9._-]); others are replaced, so that ids
// cannot smuggle log injection or huge values into every line.
func ValidRequestID(id string) bool { return validRequestID.MatchString(id) }

// NewRequestID makes a fresh, time-ordered request id.
func NewRequestID() string { return uuid.Must(uuid.NewV7()).String() }

// NewLogger returns a JSON logger at level whose lines carry the request id
// of the context they are logged with (use the *Context methods).
func NewLogger(w io.Writer, level slog.Leveler, program string) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	return slog.New(contextHandler{h}).With("program", program)
}

type contextHandler struct{ slog.Handler }

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h contextHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return contextHandler{h.Handler.WithAttrs(attrs)}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{h.Handler.WithGroup(name)}
}
