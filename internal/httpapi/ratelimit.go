package httpapi

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/ratelimit"
	"github.com/wasmwiz/wasmwiz/internal/usage"
)

// RateLimiter decides whether a key may make a request or an execution.
type RateLimiter interface {
	Allow(ctx context.Context, key string, perMinute int) (ratelimit.Decision, error)
	AllowExecution(ctx context.Context, key string, perDay int) (ratelimit.Decision, error)
}

// limitKey is what a principal's limits count against: its API key (a
// token counts against the key it was issued for), or in development
// without credentials, its owner.
func limitKey(p auth.Principal) string {
	if p.KeyID != uuid.Nil {
		return p.KeyID.String()
	}
	return "owner:" + p.Owner
}

func ceilSeconds(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}

// rateLimit counts every authenticated /api/ request against its key's
// per-minute rate, and says where the key stands in X-RateLimit-* headers.
func (s *Server) rateLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.limiter == nil {
			return next(c)
		}
		p := principalOf(c)
		d, err := s.limiter.Allow(c.Request().Context(), limitKey(p), s.cfg.Tier(p.Tier).RequestsPerMinute)
		if err != nil {
			return err
		}
		h := c.Response().Header()
		h.Set("X-RateLimit-Limit", strconv.Itoa(d.Limit))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(max(d.Remaining, 0)))
		h.Set("X-RateLimit-Reset", strconv.Itoa(ceilSeconds(d.ResetAfter)))
		if !d.Allowed {
			s.auditLimited(c, usage.ActionRateLimitLimited, d)
			return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
				Message:    "rate limit of " + strconv.Itoa(d.Limit) + " requests per minute exceeded",
				RetryAfter: max(1, ceilSeconds(d.RetryAfter))}
		}
		return next(c)
	}
}

// allowExecution counts one execution against the key's daily quota.
func (s *Server) allowExecution(c echo.Context, p auth.Principal) error {
	if s.limiter == nil {
		return nil
	}
	d, err := s.limiter.AllowExecution(c.Request().Context(), limitKey(p), s.cfg.Tier(p.Tier).DailyQuota)
	if err != nil {
		return err
	}
	if !d.Allowed {
		s.auditLimited(c, usage.ActionQuotaExceeded, d)
		return &Error{Status: http.StatusTooManyRequests, Code: "quota_exceeded",
			Message:    "daily quota of " + strconv.Itoa(d.Limit) + " executions used; it renews at 00:00 UTC",
			RetryAfter: max(1, ceilSeconds(d.RetryAfter))}
	}
	return nil
}
