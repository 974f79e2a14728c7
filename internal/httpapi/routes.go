package httpapi

import (
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// routes is the api's table of contents.
func (s *Server) routes() {
	e := s.echo
	// Echo's own 404 and 405 reach handleError like every other error.
	// Outermost first: every response, errors and panics included, gets a
	// request id, security headers and an access log line.
	e.Use(requestID, s.securityHeaders, s.accessLog, s.recoverPanics)

	e.GET("/health/live", s.live)
	e.GET("/health/ready", s.ready)
	e.GET("/health", s.health)
	if s.metrics != nil {
		e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{})))
	}

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
	api.POST("/wasm/execute", s.execute)
}
