package httpapi

import (
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wasmwiz/wasmwiz/internal/web"
)

// routes is the api's table of contents.
func (s *Server) routes() {
	e := s.echo
	// Echo's own 404 and 405 reach handleError like every other error.
	// Outermost first: every response, errors and panics included, gets a
	// request id, security headers, an access log line and its place in
	// the wasmwiz_http_* metrics.
	e.Use(requestID, s.securityHeaders, s.accessLog, s.observeHTTP(), s.recoverPanics)

	e.GET("/health/live", s.live)
	e.GET("/health/ready", s.ready)
	e.GET("/health", s.health)
	if s.metrics != nil {
		e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{})))
	}
	e.GET("/openapi.json", s.openAPI)

	api := e.Group("/api", s.authenticate, s.rateLimit)
	api.POST("/auth/keys", s.createKey)
	api.GET("/auth/keys", s.listKeys)
	api.DELETE("/auth/keys/:id", s.revokeKey)
	api.POST("/auth/token", s.issueToken)
	api.POST("/auth/refresh", s.refreshToken)

	api.POST("/wasm/upload", s.uploadModule)
	api.GET("/wasm/modules", s.listModules)
	api.GET("/wasm/modules/:id", s.getModule)
	api.DELETE("/wasm/modules/:id", s.deleteModule)
	// Outside the rate-limited group: execute counts its request against
	// the rate itself, with its execution against the daily quota, in one
	// Redis round trip (executeLimits).
	e.POST("/api/wasm/execute", s.execute, s.authenticate)

	api.GET("/usage", s.getUsage)
	api.GET("/audit", s.listAudit)

	// The web pages (internal/web): HTML with a session cookie and CSRF
	// protection of their own. They act through the routes above, called
	// in-process with the session's token, so every rule has one code path.
	pages := echo.WrapHandler(web.New(web.Deps{
		Config: s.cfg, Logger: s.log, API: s, Auth: s.keys, Store: s.store, Workers: s.checks.Workers,
		OnSignIn: s.AuditSignIn,
	}))
	e.GET("/", pages)
	e.GET("/login", pages)
	e.POST("/login", pages)
	e.POST("/logout", pages)
	e.GET("/api-keys", pages)
	e.POST("/api-keys", pages)
	e.POST("/api-keys/:id/revoke", pages)
	e.GET("/api-keys/:id/revoke", pages)
	e.GET("/upload", pages)
	e.POST("/upload", pages)
	e.POST("/upload/run", pages)
	e.GET("/upload/run", pages)
	e.GET("/static/:name", pages)
}
