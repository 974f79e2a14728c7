package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/wasmwiz/wasmwiz/internal/telemetry"
)

// apiError is an answer of the JSON API other than success: its status and
// the contract's code and message, which are fit to show (API.md: never
// secrets or internals).
type apiError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter string
}

func (e *apiError) Error() string { return fmt.Sprintf("api %d %s: %s", e.Status, e.Code, e.Message) }

// callAPI makes one request of the JSON API in-process, as the session,
// and decodes a successful answer into out (when not nil). The request
// keeps the page's request id and client address, so that logs, limits
// and audit records see the same request as the page.
func (h *Handler) callAPI(r *http.Request, s *session, method, path, contentType string, body io.Reader, header http.Header, out any) error {
	req, err := http.NewRequestWithContext(r.Context(), method, path, body)
	if err != nil {
		return fmt.Errorf("api request %s %s: %w", method, path, err)
	}
	req.Host, req.RemoteAddr = r.Host, r.RemoteAddr
	for _, name := range []string{"User-Agent", "X-Forwarded-For", "X-Real-Ip"} {
		if v := r.Header.Values(name); len(v) > 0 {
			req.Header[name] = v
		}
	}
	if id := telemetry.RequestID(r.Context()); id != "" {
		req.Header.Set("X-Request-ID", id)
	}
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if s.signedIn() {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	for name, v := range header {
		req.Header[http.CanonicalHeaderKey(name)] = v
	}

	rec := &recorder{header: http.Header{}}
	h.api.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.status >= 300 {
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(rec.body.Bytes(), &e); err != nil || e.Error.Code == "" {
			e.Error.Code, e.Error.Message = "internal_error", "internal error"
		}
		return &apiError{Status: rec.status, Code: e.Error.Code, Message: e.Error.Message, RetryAfter: rec.header.Get("Retry-After")}
	}
	if out != nil && rec.status != http.StatusNoContent {
		if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
			return fmt.Errorf("decode api answer to %s %s: %w", method, path, err)
		}
	}
	return nil
}

// recorder keeps an in-process answer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}

// The API's answers, as far as the pages read them (API.md).

type apiKey struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix"`
	Owner      string     `json:"owner"`
	Role       string     `json:"role"`
	Tier       string     `json:"tier"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
	Key        string     `json:"key"`
}

type apiKeyList struct {
	Keys       []apiKey `json:"keys"`
	NextCursor *string  `json:"next_cursor"`
}

type apiModule struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Owner     string    `json:"owner"`
	SHA256    string    `json:"sha256"`
	SizeBytes int64     `json:"size_bytes"`
	Exports   []string  `json:"exports"`
	WASI      bool      `json:"wasi"`
	CreatedAt time.Time `json:"created_at"`
}

type apiModuleList struct {
	Modules    []apiModule `json:"modules"`
	NextCursor *string     `json:"next_cursor"`
}

type apiExecution struct {
	ExecutionID  string  `json:"execution_id"`
	ModuleID     string  `json:"module_id"`
	Status       string  `json:"status"`
	ExitCode     uint32  `json:"exit_code"`
	Stdout       *string `json:"stdout"`
	StdoutBase64 *string `json:"stdout_base64"`
	Stderr       *string `json:"stderr"`
	StderrBase64 *string `json:"stderr_base64"`
	Truncated    bool    `json:"truncated"`
	Error        *string `json:"error"`
	Usage        struct {
		DurationMS      float64 `json:"duration_ms"`
		MemoryPeakBytes uint64  `json:"memory_peak_bytes"`
		QueueMS         float64 `json:"queue_ms"`
	} `json:"usage"`
	Worker string `json:"worker"`
}
