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
	AllowExecute(ctx context.Context, key string, perMinute, perDay int) (request, execution ratelimit.Decision, err error)
	Refused(key string, perMinute int) (ratelimit.Decision, bool)
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
// POST /api/wasm/execute counts its own requests (executeLimits).
func (s *Server) rateLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := s.countRequest(c, principalOf(c)); err != nil {
			return err
		}
		return next(c)
	}
}

// countRequest counts one request against the key's per-minute rate.
func (s *Server) countRequest(c echo.Context, p auth.Principal) error {
	if s.limiter == nil {
		return nil
	}
	d, err := s.limiter.Allow(c.Request().Context(), limitKey(p), s.cfg.Tier(p.Tier).RequestsPerMinute)
	if err != nil {
		return err
	}
	return s.rateDecided(c, d)
}

// rateDecided says where the key stands in X-RateLimit-* headers and turns
// a refusal into 429 rate_limited.
func (s *Server) rateDecided(c echo.Context, d ratelimit.Decision) error {
	// One backing array for the three values, under canonical keys: Set
	// would allocate a slice per header and a canonical copy of each
	// mixed-case name, on every request.
	v := make([]string, 3)
	v[0], v[1], v[2] = strconv.Itoa(d.Limit), strconv.Itoa(max(d.Remaining, 0)), strconv.Itoa(ceilSeconds(d.ResetAfter))
	h := c.Response().Header()
	h["X-Ratelimit-Limit"] = v[0:1:1]
	h["X-Ratelimit-Remaining"] = v[1:2:2]
	h["X-Ratelimit-Reset"] = v[2:3:3]
	if !d.Allowed {
		s.auditLimited(c, usage.ActionRateLimitLimited, d)
		return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
			Message:    "rate limit of " + strconv.Itoa(d.Limit) + " requests per minute exceeded",
			RetryAfter: max(1, ceilSeconds(d.RetryAfter))}
	}
	return nil
}

// quotaDecided turns a refusal of the daily quota into 429 quota_exceeded.
func (s *Server) quotaDecided(c echo.Context, d ratelimit.Decision) error {
	if !d.Allowed {
		s.auditLimited(c, usage.ActionQuotaExceeded, d)
		return &Error{Status: http.StatusTooManyRequests, Code: "quota_exceeded",
			Message:    "daily quota of " + strconv.Itoa(d.Limit) + " executions used; it renews at 00:00 UTC",
			RetryAfter: max(1, ceilSeconds(d.RetryAfter))}
	}
	return nil
}

// executeLimits counts an execute request against the key's per-minute
// rate and, once the request has proved valid, its execution against the
// daily quota: for a JSON request, both in one Redis round trip
// (AllowExecute). Make it before reading the body, then call invalid or
// allow once.
//
// Why the rate of a JSON request is counted after its body is read: the
// quota may count only valid executions, and validity is known only once
// the body is decoded and the module looked up; counting the rate first,
// as the middleware does, would take a second round trip. Answers stay as
// they were: an invalid request is then counted against the rate alone
// (Allow: two round trips, for invalid requests only), and over the rate
// it answers 429 rate_limited, not its 400 or 404, as if counted first.
// What reading first must not do is hand a key over its rate work that the
// limit would have spared (reading a body of megabytes, a module lookup in
// PostgreSQL): a key this replica already knows to be over its rate
// (Limiter.Refused, exact) is refused before its body is read. Only a key
// pushed over by other replicas gets a body read before this replica
// learns of it from Redis; it then knows until the key may retry.
//
// A multipart request may carry a module, validated and stored before the
// execution is known valid: no key over its rate may cause that, so its
// rate is counted before the body is read, as the middleware does, and its
// quota once it has proved valid (two round trips, as before).
type executeLimits struct {
	s   *Server
	c   echo.Context
	p   auth.Principal
	key string // limitKey(p), made once
	// counted: the request has been counted against the rate.
	counted bool
}

func (s *Server) executeLimits(c echo.Context, p auth.Principal) (executeLimits, error) {
	l := executeLimits{s: s, c: c, p: p, key: limitKey(p)}
	if s.limiter == nil {
		return l, nil
	}
	if mediaType(c.Request()) == "multipart/form-data" {
		l.counted = true
		return l, s.countRequest(c, p)
	}
	if d, refused := s.limiter.Refused(l.key, s.cfg.Tier(p.Tier).RequestsPerMinute); refused {
		return l, s.rateDecided(c, d)
	}
	return l, nil
}

// invalid returns the error of a request that proved invalid, once the
// request is counted against the rate (every /api/ request is); over the
// rate, the answer is 429 rate_limited, as if the middleware had refused
// it before reading the body. An invalid request is not counted against
// the quota.
func (l *executeLimits) invalid(err error) error {
	if !l.counted {
		l.counted = true
		if rateErr := l.s.countRequest(l.c, l.p); rateErr != nil {
			return rateErr
		}
	}
	return err
}

// allow counts a valid execution: against the rate unless already counted,
// and if the rate admits it, against the daily quota.
func (l *executeLimits) allow() error {
	s, c, p := l.s, l.c, l.p
	if s.limiter == nil {
		return nil
	}
	ctx, key, tier := c.Request().Context(), l.key, s.cfg.Tier(p.Tier)
	if l.counted {
		d, err := s.limiter.AllowExecution(ctx, key, tier.DailyQuota)
		if err != nil {
			return err
		}
		return s.quotaDecided(c, d)
	}
	l.counted = true
	req, exec, err := s.limiter.AllowExecute(ctx, key, tier.RequestsPerMinute, tier.DailyQuota)
	if err != nil {
		return err
	}
	if err := s.rateDecided(c, req); err != nil {
		return err
	}
	return s.quotaDecided(c, exec)
}
