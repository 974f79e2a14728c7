package httpapi

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmwiz/wasmwiz/docs"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/telemetry"
)

// routeUnmatched labels requests that matched no route, so that scanners
// probing random paths cannot mint a series per path.
const routeUnmatched = "unmatched"

// observeHTTP records every request in the wasmwiz_http_* metrics under its
// route pattern (c.Path(), "/api/wasm/modules/:id"), never its path, and
// counts executions that found no worker or no reply in time. It sits
// inside accessLog and hands errors to the error handler itself, so that
// the status it records is the one the client got.
func (s *Server) observeHTTP() echo.MiddlewareFunc {
	var reg prometheus.Registerer
	if s.metrics != nil {
		reg = s.metrics
	}
	m := telemetry.NewAPIMetrics(reg)
	// The routes are all registered by the first request.
	known := sync.OnceValue(func() map[string]bool { return routePatterns(s.echo) })
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			m.RequestStarted()
			defer m.RequestEnded()
			err := next(c)
			if err != nil {
				switch {
				case errors.Is(err, protocol.ErrNoWorkers):
					m.NoResponders()
				case errors.Is(err, protocol.ErrTimeout):
					m.Timeout()
				}
				c.Error(err)
			}
			route := c.Path()
			if !known()[route] {
				route = routeUnmatched
			}
			m.Observe(route, methodLabel(c.Request().Method), c.Response().Status, time.Since(start))
			return nil
		}
	}
}

// routePatterns are the patterns of the registered routes. Echo's catch-alls
// for groups with middleware ("/api/*", registered as RouteNotFound) are left
// out: what reaches them matched no route of ours.
func routePatterns(e *echo.Echo) map[string]bool {
	out := map[string]bool{}
	for _, r := range e.Routes() {
		if r.Method != echo.RouteNotFound {
			out[r.Path] = true
		}
	}
	return out
}

// methodLabel keeps the method label to the standard methods: a client may
// send any token as a method.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// openAPI serves the OpenAPI document of this API.
func (s *Server) openAPI(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "public, max-age=300")
	return c.Blob(http.StatusOK, "application/json; charset=utf-8", docs.OpenAPI())
}
