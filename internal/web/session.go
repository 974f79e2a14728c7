package web

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wasmwiz/wasmwiz/internal/auth"
)

// cookieNames are the pages' cookies. Outside development they carry the
// __Host- prefix, which browsers accept only with Secure, Path=/ and no
// Domain: no other host, sibling or parent, can set or shadow them.
type cookieNames struct {
	session, csrf, newKey string
}

func newCookieNames(dev bool) cookieNames {
	prefix := "__Host-"
	if dev {
		// Development is served over plain HTTP, where Secure (and so the
		// prefix) would make browsers drop the cookies.
		prefix = ""
	}
	return cookieNames{session: prefix + "wwz_session", csrf: prefix + "wwz_csrf", newKey: prefix + "wwz_newkey"}
}

// session is who a page acts for.
type session struct {
	p auth.Principal
	// token is the session's JWT; empty for the development principal.
	token string
	// csrf is the token the session's forms carry.
	csrf string
}

// signedIn reports whether the session comes from signing in, rather than
// development's default principal.
func (s *session) signedIn() bool { return s != nil && s.token != "" }

func (h *Handler) setCookie(w http.ResponseWriter, name, value string, expires time.Time) {
	c := &http.Cookie{
		Name: name, Value: value, Path: "/",
		HttpOnly: true, Secure: !h.dev, SameSite: http.SameSiteStrictMode,
	}
	if !expires.IsZero() {
		c.Expires = expires.UTC()
		c.MaxAge = max(1, int(time.Until(expires).Seconds()))
	}
	http.SetCookie(w, c)
}

func (h *Handler) clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: !h.dev, SameSite: http.SameSiteStrictMode,
	})
}

// session finds the page's session. Without one, outside development, it
// redirects to /login and reports false; so it does, clearing the cookie,
// when the session's token is no longer valid.
func (h *Handler) session(w http.ResponseWriter, r *http.Request) (*session, bool) {
	csrf := h.csrfToken(w, r)
	c, err := r.Cookie(h.cookies.session)
	if err != nil || c.Value == "" {
		if h.dev {
			return &session{p: auth.Development(), csrf: csrf}, true
		}
		h.toLogin(w, r, "")
		return nil, false
	}
	p, err := h.auth.Authenticate(r.Context(), "Bearer "+c.Value, "")
	switch {
	case err == nil && p.Method == auth.MethodToken:
	case err == nil || errors.Is(err, auth.ErrUnauthenticated):
		// Expired, revoked, garbage, or not a token at all.
		h.clearCookie(w, h.cookies.session)
		h.toLogin(w, r, "expired")
		return nil, false
	default:
		h.fail(w, r, nil, err)
		return nil, false
	}
	s := &session{p: p, token: c.Value, csrf: csrf}
	h.refresh(w, r, s)
	return s, true
}

// optionalSession is the session of a request that does not need one
// (sign-in, sign-out): its cookie, if valid, without refreshing.
func (h *Handler) optionalSession(r *http.Request) *session {
	c, err := r.Cookie(h.cookies.session)
	if err != nil || c.Value == "" {
		return nil
	}
	p, err := h.auth.Authenticate(r.Context(), "Bearer "+c.Value, "")
	if err != nil || p.Method != auth.MethodToken {
		return nil
	}
	return &session{p: p, token: c.Value, csrf: h.csrfFromCookie(r)}
}

// refresh replaces a token past half its life, so that a session in use
// does not expire under its user. The token was verified just before, so
// its expiry can be read without checking the signature again.
func (h *Handler) refresh(w http.ResponseWriter, r *http.Request, s *session) {
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(s.token, &claims); err != nil || claims.ExpiresAt == nil {
		return
	}
	if claims.ExpiresAt.Sub(h.now()) > h.cfg.JWTTTL/2 {
		return
	}
	token, expires, err := h.auth.RefreshToken(s.p)
	if err != nil {
		h.log.WarnContext(r.Context(), "refresh web session", "key_id", s.p.KeyID, "error", err)
		return
	}
	s.token = token
	h.setCookie(w, h.cookies.session, token, expires)
}

// toLogin redirects to the sign-in page, which then leads back here.
func (h *Handler) toLogin(w http.ResponseWriter, r *http.Request, reason string) {
	q := url.Values{}
	next := r.URL.RequestURI()
	if r.Method != http.MethodGet {
		// A form's page, not its action: the form has to be sent again.
		next = pageOf(r.URL.Path)
	}
	if next != "/" {
		q.Set("next", next)
	}
	if reason != "" {
		q.Set(reason, "1")
	}
	target := "/login"
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	redirect(w, target)
}

func pageOf(path string) string {
	for _, p := range []string{"/api-keys", "/upload"} {
		if path == p || strings.HasPrefix(path, p+"/") {
			return p
		}
	}
	return "/"
}

// localPath returns next when it is a path of this site, else "/": a
// sign-in must not lead to another site.
func localPath(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" {
		return "/"
	}
	return u.RequestURI()
}

// redirect answers 303 See Other, so that a form's POST becomes a GET.
func redirect(w http.ResponseWriter, target string) {
	h := w.Header()
	// The API's middleware preset a JSON type; a redirect has no body.
	h.Del("Content-Type")
	h.Set("Cache-Control", "no-store")
	h.Set("Location", target)
	w.WriteHeader(http.StatusSeeOther)
}

type loginView struct {
	Next     string
	Notice   string
	Error    string
	SignedIn bool
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	next := localPath(q.Get("next"))
	if s := h.optionalSession(r); s != nil {
		redirect(w, next)
		return
	}
	v := loginView{Next: next}
	switch {
	case q.Has("expired"):
		v.Notice = "Your session has ended. Sign in again to go on."
	case q.Has("revoked"):
		v.Notice = "The key you were signed in with has been revoked. Sign in with another key."
	case q.Has("signed_out"):
		v.Notice = "You are signed out."
	}
	h.render(w, r, http.StatusOK, "login", &session{csrf: h.csrfToken(w, r)}, "Sign in", v)
}

type tokenJSON struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// login trades an API key for a token through POST /api/auth/token, and
// keeps the token in the session cookie.
func (h *Handler) login(w http.ResponseWriter, r *http.Request, _ *session) error {
	next := localPath(r.PostFormValue("next"))
	key := strings.TrimSpace(r.PostFormValue("key"))
	refuse := func(status int, msg string) error {
		h.render(w, r, status, "login", &session{csrf: h.csrfFromCookie(r)}, "Sign in", loginView{Next: next, Error: msg})
		return nil
	}
	if key == "" {
		return refuse(http.StatusBadRequest, "Enter an API key.")
	}
	var tok tokenJSON
	err := h.callAPI(r, nil, http.MethodPost, "/api/auth/token", "", nil, http.Header{"X-Api-Key": {key}}, &tok)
	var apiErr *apiError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized {
		if h.onSignIn != nil {
			h.onSignIn(r, auth.Principal{}, err) // AUDIT HOOK: web.signin refused
		}
		return refuse(http.StatusUnauthorized, "That key was not accepted: it may be mistyped, expired or revoked.")
	}
	if err != nil {
		return err
	}
	p, err := h.auth.Authenticate(r.Context(), "Bearer "+tok.Token, "")
	if err != nil {
		return err
	}
	if h.onSignIn != nil {
		h.onSignIn(r, p, nil) // AUDIT HOOK: web.signin ok
	}
	h.setCookie(w, h.cookies.session, tok.Token, tok.ExpiresAt)
	// A new browser secret at sign-in: forms from before it are void, and a
	// secret planted before sign-in is worth nothing after.
	h.newCSRFCookie(w)
	h.clearCookie(w, h.cookies.newKey)
	h.log.InfoContext(r.Context(), "web sign-in", "key_id", p.KeyID, "owner", p.Owner)
	redirect(w, next)
	return nil
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request, _ *session) error {
	h.clearCookie(w, h.cookies.session)
	h.clearCookie(w, h.cookies.csrf)
	h.clearCookie(w, h.cookies.newKey)
	redirect(w, "/login?signed_out=1")
	return nil
}
