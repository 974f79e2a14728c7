// Package web serves WasmWiz's HTML pages: sign-in, the dashboard, API keys,
// and upload-and-run. It stands beside the JSON API rather than below it:
// every action of a page is a call of the JSON API, made in-process with the
// session's credentials, so that each rule (validation, tenancy, limits,
// quotas, usage records, audit) has one code path. Only the dashboard's
// figures, which no API route serves, are read from the store directly,
// scoped like the API scopes them (a user's owner; an admin, everyone).
// The package speaks net/http; httpapi mounts it on Echo.
//
// Sessions. Signing in with an API key calls POST /api/auth/token, and the
// session cookie holds the JWT it answers: HttpOnly, SameSite=Strict, Path=/,
// and outside development Secure with the __Host- prefix. Every page
// authenticates that token through auth.Service, so a revoked key or an
// expired token ends the session at once, and goes back to /login. A token
// past half its life is refreshed on the next page, so a session ends
// JWT_TTL after the last page seen (or when its key is revoked). Sign-out
// deletes the cookie; the token it held expires with its TTL.
//
// Development. As the API does, a browser without a session acts as the
// development principal (owner dev, role admin, tier pro), under a banner
// that says so and links to /login; a session that is sent is still
// checked, and a bad one goes to /login. Outside development every page but
// /login needs a session.
//
// Cross-site request forgery. Every POST passes net/http's
// CrossOriginProtection (Sec-Fetch-Site, else Origin against Host) and must
// carry a token in a hidden field: the HMAC-SHA256, keyed with JWT_SECRET,
// of a random per-browser cookie that is replaced at sign-in and sign-out
// (a signed double-submit cookie, which survives the token's refreshes).
// A POST failing either check is refused with 403 and a page saying why.
//
// Content-Security-Policy. Pages send default-src 'self'; script-src
// 'self'; style-src 'self'; img-src 'self' data:; form-action 'self';
// frame-ancestors 'none'; base-uri 'none'. Nothing is inline: one
// stylesheet and one script under /static/, versioned by content hash and
// cached for a year; the dashboard's chart is server-rendered SVG styled by
// class. Every page works without the script, which adds upload progress,
// a copy button and a confirmation dialog.
package web

import (
	"context"
	"crypto/cipher"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/config"
	"github.com/wasmwiz/wasmwiz/internal/store"
)

// Authenticator checks a session's token and refreshes it.
type Authenticator interface {
	Authenticate(ctx context.Context, authorization, apiKey string) (auth.Principal, error)
	RefreshToken(p auth.Principal) (string, time.Time, error)
}

// DashboardStore reads the dashboard's figures.
type DashboardStore interface {
	Dashboard(ctx context.Context, scope store.Scope, since, until time.Time, buckets, recent int) (store.Dashboard, error)
}

// Deps are what the pages need, built by the HTTP edge.
type Deps struct {
	Config config.Config
	Logger *slog.Logger
	// API is the JSON API; pages call it in-process.
	API   http.Handler
	Auth  Authenticator
	Store DashboardStore
	// Workers counts the workers online, as /health does; nil shows "unknown".
	Workers func(ctx context.Context) (int, error)
	// OnSignIn, when set, is told of every sign-in attempt: p is the
	// principal signed in, or err why the key was refused.
	OnSignIn func(r *http.Request, p auth.Principal, err error)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Handler serves the pages.
type Handler struct {
	cfg      config.Config
	log      *slog.Logger
	api      http.Handler
	auth     Authenticator
	store    DashboardStore
	workers  func(ctx context.Context) (int, error)
	onSignIn func(r *http.Request, p auth.Principal, err error)
	now      func() time.Time

	dev      bool
	cookies  cookieNames
	csrfKey  []byte
	flash    cipher.AEAD
	origin   *http.CrossOriginProtection
	pages    map[string]*template.Template
	assets   map[string]asset
	mux      *http.ServeMux
	formSize formLimits
}

// formLimits bound the bodies of the forms: the API applies its own rules
// afterwards; these only keep a hostile body from being read whole.
type formLimits struct {
	small, upload, run int64
}

// formOverhead is room for multipart boundaries, headers and small fields.
const formOverhead = 64 << 10

// New builds the pages. It panics when an embedded template does not
// parse, which the package's tests rule out.
func New(d Deps) *Handler {
	h := &Handler{
		cfg: d.Config, log: d.Logger, api: d.API, auth: d.Auth, store: d.Store, workers: d.Workers,
		onSignIn: d.OnSignIn, now: d.Now, dev: d.Config.IsDevelopment(),
		csrfKey: deriveKey(d.Config.JWTSecret, "wasmwiz web csrf v1"),
		flash:   newAEAD(deriveKey(d.Config.JWTSecret, "wasmwiz web flash v1")),
		origin:  http.NewCrossOriginProtection(),
		formSize: formLimits{
			small:  formOverhead,
			upload: d.Config.MaxWASMSize + formOverhead,
			// Browsers send a textarea's line breaks as CRLF: twice the
			// input at most.
			run: 2*d.Config.MaxInputSize + formOverhead,
		},
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.cookies = newCookieNames(h.dev)
	h.assets = loadAssets()
	h.pages = parseTemplates(h.assets)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.page(h.dashboard))
	mux.HandleFunc("GET /login", h.loginPage)
	mux.HandleFunc("POST /login", h.post(h.formSize.small, false, h.login))
	mux.HandleFunc("POST /logout", h.post(h.formSize.small, false, h.logout))
	mux.HandleFunc("GET /api-keys", h.page(h.keysPage))
	mux.HandleFunc("POST /api-keys", h.post(h.formSize.small, true, h.createKey))
	mux.HandleFunc("POST /api-keys/{id}/revoke", h.post(h.formSize.small, true, h.revokeKey))
	mux.HandleFunc("GET /upload", h.page(h.uploadPage))
	mux.HandleFunc("POST /upload", h.post(h.formSize.upload, true, h.upload))
	mux.HandleFunc("POST /upload/run", h.post(h.formSize.run, true, h.run))
	// A form's action opened as an address (a reload, a bookmark) leads
	// to the form's page.
	mux.HandleFunc("GET /api-keys/{id}/revoke", h.toPage("/api-keys"))
	mux.HandleFunc("GET /upload/run", h.toPage("/upload"))
	mux.HandleFunc("GET /static/{name}", h.static)
	mux.HandleFunc("/", h.notFound)
	h.mux = mux
	return h
}

// ServeHTTP serves a page.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

type handlerFunc func(w http.ResponseWriter, r *http.Request, s *session) error

// page serves a GET page to a session (or, in development, the
// development principal); without one it redirects to /login.
func (h *Handler) page(fn handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := h.session(w, r)
		if !ok {
			return
		}
		if err := fn(w, r, s); err != nil {
			h.fail(w, r, s, err)
		}
	}
}

// post serves a form: it refuses cross-origin requests, reads at most
// limit bytes of form, checks the CSRF token, then (when needSession)
// finds the session, in that order, so that nothing of a forged request
// reaches a handler.
func (h *Handler) post(limit int64, needSession bool, fn handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h.origin.Check(r); err != nil {
			h.fail(w, r, nil, errCrossOrigin)
			return
		}
		if err := h.parseForm(w, r, limit); err != nil {
			h.fail(w, r, nil, err)
			return
		}
		if r.MultipartForm != nil {
			// Echo hands over a copy of the request, so net/http's own
			// clean-up would not see this form.
			defer r.MultipartForm.RemoveAll()
		}
		if !h.validCSRF(r) {
			h.fail(w, r, nil, errBadCSRF)
			return
		}
		var s *session
		if needSession {
			var ok bool
			if s, ok = h.session(w, r); !ok {
				return
			}
		} else {
			s = h.optionalSession(r)
		}
		if err := fn(w, r, s); err != nil {
			h.fail(w, r, s, err)
		}
	}
}

// parseForm reads an urlencoded or multipart form of at most limit bytes,
// all in memory.
func (h *Handler) parseForm(w http.ResponseWriter, r *http.Request, limit int64) error {
	tooLarge := &problem{Status: http.StatusRequestEntityTooLarge, Title: "Too large",
		Message: "The form is larger than this server accepts. " + sizeHint(r.URL.Path, h.cfg)}
	if r.ContentLength > limit {
		return tooLarge
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	var err error
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		err = r.ParseMultipartForm(limit)
	} else {
		err = r.ParseForm()
	}
	if err == nil {
		return nil
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) || strings.Contains(err.Error(), "request body too large") {
		return tooLarge
	}
	return &problem{Status: http.StatusBadRequest, Title: "Check the form", Message: "The form could not be read; reload the page and try again.", Err: err}
}

func sizeHint(path string, cfg config.Config) string {
	switch path {
	case "/upload":
		return "A module may be at most " + humanBytes(cfg.MaxWASMSize) + " (MAX_WASM_SIZE)."
	case "/upload/run":
		return "An input may be at most " + humanBytes(cfg.MaxInputSize) + " (MAX_INPUT_SIZE)."
	}
	return ""
}

func (h *Handler) toPage(target string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { redirect(w, target) }
}

func (h *Handler) notFound(w http.ResponseWriter, r *http.Request) {
	h.fail(w, r, nil, &problem{Status: http.StatusNotFound, Title: "Not found", Message: "There is no page at this address."})
}
