package httpapi

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/store"
)

type keyJSON struct {
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
	// Key is the secret, present only in the answer to its creation.
	Key string `json:"key,omitempty"`
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func toKeyJSON(k store.APIKey) keyJSON {
	return keyJSON{
		ID: k.ID.String(), Name: k.Name, Prefix: k.Prefix, Owner: k.Owner, Role: k.Role, Tier: k.Tier,
		CreatedAt: k.CreatedAt.UTC(), ExpiresAt: utc(k.ExpiresAt), LastUsedAt: utc(k.LastUsedAt), RevokedAt: utc(k.RevokedAt),
	}
}

type createKeyRequest struct {
	Name          string `json:"name"`
	Tier          string `json:"tier"`
	Role          string `json:"role"`
	Owner         string `json:"owner"`
	ExpiresInDays *int   `json:"expires_in_days"`
}

const smallJSONLimit = 64 << 10

func (s *Server) createKey(c echo.Context) error {
	p := principalOf(c)
	var req createKeyRequest
	if err := decodeJSON(c.Request(), smallJSONLimit, &req); err != nil {
		return err
	}
	k, secret, err := s.keys.CreateKey(c.Request().Context(), p, auth.NewKeyRequest(req))
	s.auditKeyCreated(c, req, k, err)
	if err != nil {
		return err
	}
	s.log.InfoContext(c.Request().Context(), "key created", "key_id", k.ID, "owner", k.Owner, "role", k.Role, "tier", k.Tier,
		"by_key_id", p.KeyID)
	out := toKeyJSON(k)
	out.Key = secret
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, out)
}

type keyListJSON struct {
	Keys       []keyJSON `json:"keys"`
	NextCursor *string   `json:"next_cursor"`
}

func (s *Server) listKeys(c echo.Context) error {
	p := principalOf(c)
	limit, before, err := pageParams(c)
	if err != nil {
		return err
	}
	keys, err := s.keys.ListKeys(c.Request().Context(), p, before, limit+1)
	if err != nil {
		return err
	}
	page, next := pageOf(keys, limit, func(k store.APIKey) uuid.UUID { return k.ID })
	out := keyListJSON{Keys: make([]keyJSON, 0, len(page)), NextCursor: next}
	for _, k := range page {
		out.Keys = append(out.Keys, toKeyJSON(k))
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) revokeKey(c echo.Context) error {
	p := principalOf(c)
	raw := c.Param("id")
	id, err := uuid.Parse(raw)
	if err != nil || len(raw) != 36 {
		return invalidRequest("key id %q is not a UUID", truncate(raw, 64))
	}
	_, err = s.keys.RevokeKey(c.Request().Context(), p, id)
	s.auditKeyRevoked(c, id, err)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return &Error{Status: http.StatusNotFound, Code: "key_not_found", Message: "key " + id.String() + " not found", Err: err}
		}
		return err
	}
	s.log.InfoContext(c.Request().Context(), "key revoked", "key_id", id, "by_key_id", p.KeyID)
	return c.NoContent(http.StatusNoContent)
}

type tokenJSON struct {
	Token     string    `json:"token"`
	TokenType string    `json:"token_type"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *Server) issueToken(c echo.Context) error {
	return s.writeToken(c, s.keys.IssueToken)
}

func (s *Server) refreshToken(c echo.Context) error {
	return s.writeToken(c, s.keys.RefreshToken)
}

func (s *Server) writeToken(c echo.Context, issue func(auth.Principal) (string, time.Time, error)) error {
	if err := emptyBody(c.Request()); err != nil {
		return err
	}
	token, expires, err := issue(principalOf(c))
	s.auditToken(c, expires, err)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, tokenJSON{Token: token, TokenType: "Bearer", ExpiresAt: expires.UTC()})
}

// emptyBody accepts no body or an empty JSON object, so that the token
// routes can grow options later without ambiguity.
func emptyBody(r *http.Request) error {
	if r.ContentLength == 0 {
		return nil
	}
	var v struct{}
	err := decodeJSON(r, smallJSONLimit, &v)
	var apiErr *Error
	if errors.As(err, &apiErr) && apiErr.Code == "invalid_json" && strings.Contains(apiErr.Message, "empty") {
		return nil
	}
	return err
}
