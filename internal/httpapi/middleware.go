package httpapi

import (
	"fmt"
	"net/http"
	"runtime"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/telemetry"
)

// Header names in canonical form: Get and Set copy any other form into a
// new string on every call.
const (
	headerRequestID = "X-Request-Id"
	headerAPIKey    = "X-Api-Key"
)

// Keys of the values middleware leaves in Echo's context. Echo's keys are
// strings; these cannot collide with a route's own.
const (
	keyRequestID = "wasmwiz.request_id"
	keyPrincipal = "wasmwiz.principal"
)

// requestID keeps a well-formed client id or makes one, puts it on the
// response and into the request's context for every log line.
func requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(headerRequestID)
		if !telemetry.ValidRequestID(id) {
			id = telemetry.NewRequestID()
		}
		c.Set(keyRequestID, id)
		c.Response().Header()[headerRequestID] = []string{id}
		c.SetRequest(c.Request().WithContext(telemetry.WithRequestID(c.Request().Context(), id)))
		return next(c)
	}
}

func requestIDOf(c echo.Context) string {
	id, _ := c.Get(keyRequestID).(string)
	return id
}

// The security headers' values, shared by every response (read-only).
var (
	hdrNosniff    = []string{"nosniff"}
	hdrDeny       = []string{"DENY"}
	hdrNoReferrer = []string{"no-referrer"}
	hdrCSP        = []string{"default-src 'none'; frame-ancestors 'none'"}
	hdrJSON       = []string{"application/json; charset=utf-8"}
	hdrHSTS       = []string{"max-age=63072000; includeSubDomains"}
)

// securityHeaders sets API.md's headers on every response, errors included.
// The default CSP forbids everything: JSON needs nothing; HTML pages set
// their own.
func (s *Server) securityHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	hsts := !s.cfg.IsDevelopment()
	return func(c echo.Context) error {
		h := c.Response().Header()
		// The values are shared, read-only slices with canonical keys: Set
		// would allocate one per header per request. net/http copies the
		// map when it writes the header, and an Add appends to a slice of
		// capacity one, which copies it.
		h["X-Content-Type-Options"] = hdrNosniff
		h["X-Frame-Options"] = hdrDeny
		h["Referrer-Policy"] = hdrNoReferrer
		h["Content-Security-Policy"] = hdrCSP
		// Echo's JSON writer keeps a type already set; /metrics and pages
		// set their own.
		h[echo.HeaderContentType] = hdrJSON
		if hsts {
			h["Strict-Transport-Security"] = hdrHSTS
		}
		if s.draining.Load() {
			h.Set("Connection", "close")
		}
		return next(c)
	}
}

// accessLog writes one line per request, after the error handler ran so the
// status is the one the client got.
func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		r := c.Request()
		s.log.InfoContext(r.Context(), "request",
			"method", r.Method,
			"route", c.Path(),
			"status", c.Response().Status,
			"bytes_out", c.Response().Size,
			"duration_ms", float64(time.Since(start).Microseconds())/1000,
			"remote", c.RealIP(),
		)
		return nil
	}
}

// recoverPanics turns a panic into a 500 in the contract's shape and logs
// the stack, which never reaches the client.
func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			if r == http.ErrAbortHandler {
				panic(r)
			}
			stack := make([]byte, 8<<10)
			stack = stack[:runtime.Stack(stack, false)]
			s.log.ErrorContext(c.Request().Context(), "panic", "panic", fmt.Sprint(r), "stack", string(stack))
			err = &Error{Status: http.StatusInternalServerError, Code: "internal_error", Message: "internal error",
				Err: fmt.Errorf("panic: %v", r)}
		}()
		return next(c)
	}
}

// authenticate puts the caller's principal on the context.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		p, err := s.keys.Authenticate(r.Context(), r.Header.Get("Authorization"), r.Header.Get(headerAPIKey))
		if err != nil {
			s.auditRefused(c, err)
			return err
		}
		c.Set(keyPrincipal, p)
		return next(c)
	}
}

func principalOf(c echo.Context) auth.Principal {
	p, ok := c.Get(keyPrincipal).(auth.Principal)
	if !ok {
		// Routes without the authenticate middleware must not ask.
		panic("principalOf on an unauthenticated route")
	}
	return p
}
