package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/ratelimit"
	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/usage"
)

// Auditor receives the security-relevant events (usage.Auditor). Record
// must not block: it is called on the request path.
type Auditor interface {
	Record(ctx context.Context, e usage.Event)
}

// audit records an event of the request in c, filling in who (the
// principal, once authenticated), from where and the request id.
func (s *Server) audit(c echo.Context, e usage.Event) {
	if s.auditor == nil {
		return
	}
	if p, ok := principalIfAny(c); ok {
		if e.KeyID == uuid.Nil {
			e.KeyID = p.KeyID
		}
		if e.Owner == "" {
			e.Owner = p.Owner
		}
	}
	var peer string
	e.ClientIP, peer = clientIP(c)
	if peer != "" {
		if e.Detail == nil {
			e.Detail = map[string]any{}
		}
		e.Detail["peer"] = peer
	}
	// Outside the API's middleware (a web page), the auditor takes the
	// request id from the context.
	e.RequestID = requestIDOf(c)
	s.auditor.Record(c.Request().Context(), e)
}

// principalIfAny is the principal of an authenticated request.
func principalIfAny(c echo.Context) (auth.Principal, bool) {
	p, ok := c.Get(keyPrincipal).(auth.Principal)
	return p, ok
}

// AuditSignIn records a sign-in to the web pages: p is who signed in, or
// err why the key was refused. It fits web.Deps.OnSignIn.
func (s *Server) AuditSignIn(r *http.Request, p auth.Principal, err error) {
	e := usage.Event{Action: usage.ActionWebSignIn, Outcome: usage.OutcomeSuccess, KeyID: p.KeyID, Owner: p.Owner}
	if err != nil {
		e.Outcome = usage.OutcomeDenied
		e.Detail = map[string]any{"reason": "key_refused"}
	}
	// A context of this server's Echo, so that the client address is
	// read as for the API's own events.
	s.audit(s.echo.NewContext(r, nil), e)
}

// clientIP is the client's address as the audit log records it, and the
// address of the connection when that differs (a proxy, or a forged
// X-Forwarded-For: Echo believes the header unless told whom to trust).
func clientIP(c echo.Context) (ip, peer string) {
	remote, _, err := net.SplitHostPort(c.Request().RemoteAddr)
	if err != nil {
		remote = c.Request().RemoteAddr
	}
	ip = strings.TrimSpace(c.RealIP())
	if net.ParseIP(ip) == nil {
		return remote, ""
	}
	if ip != remote {
		return ip, remote
	}
	return ip, ""
}

// refusalReason names why credentials were refused, for the audit log.
// auth keeps its reasons in its error messages, all of them written there
// and none holding a secret; this reads them into a few stable words.
func refusalReason(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "no credentials"):
		return "missing"
	case errors.Is(err, auth.ErrMalformedKey), strings.Contains(msg, "not a bearer credential"),
		strings.Contains(msg, "unrecognised credential"):
		return "malformed"
	case strings.Contains(msg, "revoked"):
		return "revoked"
	case strings.Contains(msg, "expired"):
		return "expired"
	case strings.Contains(msg, "unknown key"):
		return "unknown"
	case errors.Is(err, auth.ErrBadToken):
		return "invalid_token"
	}
	return "invalid"
}

// credentialHint says what kind of credential a request sent and, for a
// well-formed API key, its display prefix: never more of it.
func credentialHint(r *http.Request) (kind, prefix string) {
	cred := ""
	if authz := r.Header.Get("Authorization"); authz != "" {
		scheme, rest, ok := strings.Cut(authz, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "other", ""
		}
		cred = strings.TrimSpace(rest)
	} else if cred = strings.TrimSpace(r.Header.Get(headerAPIKey)); cred == "" {
		return "none", ""
	}
	switch {
	case auth.CheckKeyFormat(cred) == nil:
		return "key", auth.DisplayPrefix(cred)
	case strings.HasPrefix(cred, "wwz_"):
		return "key", ""
	case strings.Count(cred, ".") == 2:
		return "token", ""
	}
	return "other", ""
}

// isTokenRoute reports whether a refusal is one of a token request.
func isTokenRoute(c echo.Context) bool {
	return c.Path() == "/api/auth/token" || c.Path() == "/api/auth/refresh"
}

// auditRefused records refused credentials: auth.refused, or
// token.refused on the token routes.
func (s *Server) auditRefused(c echo.Context, err error) {
	if !errors.Is(err, auth.ErrUnauthenticated) {
		return // the database failed; nobody was refused
	}
	kind, prefix := credentialHint(c.Request())
	detail := map[string]any{"reason": refusalReason(err), "credential": kind}
	if prefix != "" {
		detail["key_prefix"] = prefix
	}
	action := usage.ActionAuthRefused
	if isTokenRoute(c) {
		action = usage.ActionTokenRefused
	}
	s.audit(c, usage.Event{Action: action, Outcome: usage.OutcomeDenied, Detail: detail})
}

// auditToken records a token issued, or refused by the token routes
// themselves (a token asked for with a token, a refresh with a key).
func (s *Server) auditToken(c echo.Context, expires time.Time, err error) {
	p, _ := principalIfAny(c)
	if err != nil {
		if errors.Is(err, auth.ErrUnauthenticated) {
			s.audit(c, usage.Event{Action: usage.ActionTokenRefused, Outcome: usage.OutcomeDenied,
				TargetID: idOrEmpty(p.KeyID),
				Detail:   map[string]any{"reason": "wrong_credential", "credential": string(p.Method)}})
		}
		return
	}
	s.audit(c, usage.Event{Action: usage.ActionTokenIssued, Outcome: usage.OutcomeSuccess, TargetID: idOrEmpty(p.KeyID),
		Detail: map[string]any{"expires_at": expires.UTC().Format(time.RFC3339), "via": string(p.Method)}})
}

// auditKeyCreated records a key made, or refused by the rules of who may
// make which key. Bad input is not an event.
func (s *Server) auditKeyCreated(c echo.Context, req createKeyRequest, k store.APIKey, err error) {
	switch {
	case err == nil:
		s.audit(c, usage.Event{Action: usage.ActionKeyCreated, Outcome: usage.OutcomeSuccess, TargetID: k.ID.String(),
			Detail: map[string]any{"key_owner": k.Owner, "role": k.Role, "tier": k.Tier, "key_prefix": k.Prefix}})
	case errors.Is(err, auth.ErrForbidden):
		detail := map[string]any{"reason": forbiddenReason(err)}
		for k, v := range map[string]string{"key_owner": req.Owner, "role": req.Role, "tier": req.Tier} {
			if v != "" {
				detail[k] = truncate(v, 64)
			}
		}
		s.audit(c, usage.Event{Action: usage.ActionKeyCreated, Outcome: usage.OutcomeDenied, Detail: detail})
	}
}

// auditKeyRevoked records a revocation, or an attempt on a key the caller
// may not see (unknown or another owner's).
func (s *Server) auditKeyRevoked(c echo.Context, id uuid.UUID, err error) {
	switch {
	case err == nil:
		s.audit(c, usage.Event{Action: usage.ActionKeyRevoked, Outcome: usage.OutcomeSuccess, TargetID: id.String()})
	case errors.Is(err, store.ErrNotFound):
		s.audit(c, usage.Event{Action: usage.ActionKeyRevoked, Outcome: usage.OutcomeFailure, TargetID: id.String(),
			Detail: map[string]any{"reason": "not_found"}})
	}
}

// auditModule records a module uploaded or deleted.
func (s *Server) auditModule(c echo.Context, action string, m store.Module) {
	detail := map[string]any{}
	if action == usage.ActionModuleUploaded {
		detail = map[string]any{"sha256": m.SHA256, "size_bytes": m.SizeBytes, "module_owner": m.Owner}
	}
	s.audit(c, usage.Event{Action: action, Outcome: usage.OutcomeSuccess, TargetID: m.ID.String(), Detail: detail})
}

// auditLimited records a rate limit or quota refusal.
func (s *Server) auditLimited(c echo.Context, action string, d ratelimit.Decision) {
	s.audit(c, usage.Event{Action: action, Outcome: usage.OutcomeDenied,
		Detail: map[string]any{"limit": d.Limit, "retry_after_s": max(1, ceilSeconds(d.RetryAfter))}})
}

func idOrEmpty(id uuid.UUID) string {
	if id == uuid.Nil {
		return ""
	}
	return id.String()
}

func forbiddenReason(err error) string {
	return strings.TrimPrefix(err.Error(), auth.ErrForbidden.Error()+": ")
}

// The audit log API.

type auditEventJSON struct {
	ID        string          `json:"id"`
	At        time.Time       `json:"at"`
	Action    string          `json:"action"`
	Outcome   string          `json:"outcome"`
	KeyID     *string         `json:"key_id"`
	Owner     *string         `json:"owner"`
	TargetID  *string         `json:"target_id"`
	ClientIP  *string         `json:"client_ip"`
	RequestID *string         `json:"request_id"`
	Detail    json.RawMessage `json:"detail"`
}

type auditListJSON struct {
	Events     []auditEventJSON `json:"events"`
	NextCursor *string          `json:"next_cursor"`
}

func orNull(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func toAuditEventJSON(e store.AuditEvent) auditEventJSON {
	detail := json.RawMessage(e.Detail)
	if len(detail) == 0 {
		detail = json.RawMessage(`{}`)
	}
	return auditEventJSON{
		ID: e.ID.String(), At: e.At.UTC(), Action: e.Action, Outcome: e.Outcome, KeyID: orNull(idOrEmpty(e.KeyID)),
		Owner: orNull(e.Owner), TargetID: orNull(e.TargetID), ClientIP: orNull(e.ClientIP), RequestID: orNull(e.RequestID),
		Detail: detail,
	}
}

// listAudit answers GET /api/audit: admin keys only, newest first,
// keyset-paginated like modules. since and until are optional (no default
// window: the list pages back to the oldest event kept).
func (s *Server) listAudit(c echo.Context) error {
	p := principalOf(c)
	if !p.IsAdmin() {
		return fmt.Errorf("%w: the audit log is for admin keys only", auth.ErrForbidden)
	}
	limit, before, err := pageParams(c)
	if err != nil {
		return err
	}
	since, until, err := timeParams(c)
	if err != nil {
		return err
	}
	if !since.IsZero() && !until.IsZero() && !until.After(since) {
		return invalidRequest("until must be after since")
	}
	q := store.AuditQuery{Since: since, Until: until, Before: before, Limit: limit + 1}
	if q.Owner = c.QueryParam("owner"); len(q.Owner) > 64 {
		return invalidRequest("owner must be at most 64 characters")
	}
	if q.Action = c.QueryParam("action"); q.Action != "" && !slices.Contains(usage.Actions, q.Action) {
		return invalidRequest("action must be one of %s", strings.Join(usage.Actions, ", "))
	}
	events, err := s.store.ListAuditEvents(c.Request().Context(), q)
	if err != nil {
		return err
	}
	page, next := pageOf(events, limit, func(e store.AuditEvent) uuid.UUID { return e.ID })
	out := auditListJSON{Events: make([]auditEventJSON, 0, len(page)), NextCursor: next}
	for _, e := range page {
		out.Events = append(out.Events, toAuditEventJSON(e))
	}
	return c.JSON(http.StatusOK, out)
}
