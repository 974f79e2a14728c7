package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/config"
)

// keysPageSize is how many keys a page lists.
const keysPageSize = 50

type keysView struct {
	Keys       []keyView
	NextCursor string
	NewKey     *newKeyFlash
	Notice     string
	Error      string
	Form       keyForm
	Tiers      []string
	Admin      bool
}

type keyView struct {
	ID, Name, Prefix, Owner, Role, Tier string
	Created, LastUsed, Expires, Revoked string
	IsRevoked, Current                  bool
	ConfirmText                         string
}

// keyForm is the creation form's values, kept when it is shown again.
type keyForm struct {
	Name, Tier, Role, Owner, ExpiresInDays string
}

// tiersFor lists the tiers p may give a new key: its own and below, or
// all for an admin (auth.Service decides; the form only offers).
func tiersFor(p auth.Principal) []string {
	if p.IsAdmin() {
		return config.Tiers
	}
	var out []string
	for _, t := range config.Tiers {
		if config.TierRank(t) <= config.TierRank(p.Tier) {
			out = append(out, t)
		}
	}
	return out
}

func (h *Handler) keysPage(w http.ResponseWriter, r *http.Request, s *session) error {
	v := keysView{Form: keyForm{Tier: s.p.Tier, Role: auth.RoleUser}}
	q := r.URL.Query()
	if q.Has("revoked") {
		v.Notice = "The key was revoked. Requests made with it are refused from now on."
	}
	// The key made by the POST before this page is shown once: the cookie
	// that carried it is deleted with this answer.
	if c, err := r.Cookie(h.cookies.newKey); err == nil {
		h.clearCookie(w, h.cookies.newKey)
		if f, err := h.openFlash(r, c.Value); err == nil {
			v.NewKey = &f
		}
	}
	return h.renderKeys(w, r, s, http.StatusOK, q.Get("cursor"), v)
}

// renderKeys lists the keys (GET /api/auth/keys) under whatever v holds.
func (h *Handler) renderKeys(w http.ResponseWriter, r *http.Request, s *session, status int, cursor string, v keysView) error {
	path := "/api/auth/keys?limit=" + strconv.Itoa(keysPageSize)
	if cursor != "" {
		path += "&cursor=" + url.QueryEscape(cursor)
	}
	var list apiKeyList
	if err := h.callAPI(r, s, http.MethodGet, path, "", nil, nil, &list); err != nil {
		return err
	}
	for _, k := range list.Keys {
		kv := keyView{
			ID: k.ID, Name: k.Name, Prefix: k.Prefix, Owner: k.Owner, Role: k.Role, Tier: k.Tier,
			Created: humanTime(k.CreatedAt), LastUsed: humanTimePtr(k.LastUsedAt, "never"),
			Expires: humanTimePtr(k.ExpiresAt, "never"), Revoked: humanTimePtr(k.RevokedAt, ""),
			IsRevoked: k.RevokedAt != nil, Current: s.signedIn() && k.ID == s.p.KeyID.String(),
		}
		kv.ConfirmText = "Revoke key " + k.Prefix + "… (" + k.Name + ")? Programs using it stop working within seconds."
		if kv.Current {
			kv.ConfirmText += " You are signed in with it and will be signed out."
		}
		v.Keys = append(v.Keys, kv)
	}
	if list.NextCursor != nil {
		v.NextCursor = *list.NextCursor
	}
	v.Tiers, v.Admin = tiersFor(s.p), s.p.IsAdmin()
	h.render(w, r, status, "keys", s, "API keys", v)
	return nil
}

type createKeyJSON struct {
	Name          string `json:"name"`
	Tier          string `json:"tier,omitempty"`
	Role          string `json:"role,omitempty"`
	Owner         string `json:"owner,omitempty"`
	ExpiresInDays *int   `json:"expires_in_days,omitempty"`
}

// createKey makes a key through POST /api/auth/keys, then redirects to the
// list, which shows the key once (post/redirect/get: a reload does not make
// another key, nor show this one again).
func (h *Handler) createKey(w http.ResponseWriter, r *http.Request, s *session) error {
	f := keyForm{
		Name: strings.TrimSpace(r.PostFormValue("name")), Tier: r.PostFormValue("tier"),
		Role: r.PostFormValue("role"), Owner: strings.TrimSpace(r.PostFormValue("owner")),
		ExpiresInDays: strings.TrimSpace(r.PostFormValue("expires_in_days")),
	}
	req := createKeyJSON{Name: f.Name, Tier: f.Tier, Role: f.Role, Owner: f.Owner}
	formError := func(status int, msg string) error {
		return h.renderKeys(w, r, s, status, "", keysView{Form: f, Error: msg})
	}
	if f.ExpiresInDays != "" {
		days, err := strconv.Atoi(f.ExpiresInDays)
		if err != nil {
			return formError(http.StatusBadRequest, "Expires in days must be a whole number, or empty for a key that does not expire.")
		}
		req.ExpiresInDays = &days
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var k apiKey
	err = h.callAPI(r, s, http.MethodPost, "/api/auth/keys", "application/json", bytes.NewReader(body), nil, &k)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status < 500 && ae.Status != http.StatusUnauthorized && ae.Status != http.StatusTooManyRequests {
		return formError(ae.Status, sentence(ae.Message))
	}
	if err != nil {
		return err
	}
	sealed, err := h.sealFlash(r, newKeyFlash{Key: k.Key, ID: k.ID, Name: k.Name, Prefix: k.Prefix, At: h.now()})
	if err != nil {
		return err
	}
	h.setCookie(w, h.cookies.newKey, sealed, h.now().Add(flashTTL))
	redirect(w, "/api-keys")
	return nil
}

type revokeView struct {
	ID, Name, Prefix string
	Current          bool
}

// revokeKey revokes through DELETE /api/auth/keys/{id} once confirmed. A
// form without confirm=yes (no script ran to ask) answers a page that asks.
func (h *Handler) revokeKey(w http.ResponseWriter, r *http.Request, s *session) error {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return &problem{Status: http.StatusNotFound, Title: "Not found", Message: "There is no such key."}
	}
	current := s.signedIn() && id == s.p.KeyID
	if r.PostFormValue("confirm") != "yes" {
		// Name and prefix come from the list's form: labels only.
		v := revokeView{ID: id.String(), Name: r.PostFormValue("name"), Prefix: r.PostFormValue("prefix"), Current: current}
		h.render(w, r, http.StatusOK, "revoke", s, "Revoke key", v)
		return nil
	}
	err = h.callAPI(r, s, http.MethodDelete, "/api/auth/keys/"+id.String(), "", nil, nil, nil)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return &problem{Status: http.StatusNotFound, Title: "Not found", Message: "There is no such key, or it is not yours to revoke.", Err: err}
	}
	if err != nil {
		return err
	}
	if current {
		h.clearCookie(w, h.cookies.session)
		redirect(w, "/login?revoked=1")
		return nil
	}
	redirect(w, "/api-keys?revoked=1")
	return nil
}
