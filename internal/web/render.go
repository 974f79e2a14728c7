package web

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/telemetry"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// contentSecurityPolicy is the pages' policy: nothing inline, nothing from
// elsewhere, no framing, forms to this site only.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// asset is an embedded static file and the hash that versions its URL.
type asset struct {
	body        []byte
	hash        string
	contentType string
}

var contentTypes = map[string]string{
	".css": "text/css; charset=utf-8",
	".js":  "text/javascript; charset=utf-8",
	".svg": "image/svg+xml",
}

func loadAssets() map[string]asset {
	out := map[string]asset{}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return fmt.Errorf("no content type for %s", p)
		}
		out[path.Base(p)] = asset{body: b, hash: hex.EncodeToString(sum[:6]), contentType: ct}
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("web: load static files: %v", err))
	}
	return out
}

// static serves an embedded file. A URL with the file's current hash is
// cached for a year (a new build changes the URL); any other for minutes.
func (h *Handler) static(w http.ResponseWriter, r *http.Request) {
	a, ok := h.assets[r.PathValue("name")]
	if !ok {
		h.notFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.contentType)
	hd.Set("Content-Security-Policy", contentSecurityPolicy)
	hd.Set("ETag", `"`+a.hash+`"`)
	if r.URL.Query().Get("v") == a.hash {
		hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		hd.Set("Cache-Control", "public, max-age=300")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

func parseTemplates(assets map[string]asset) map[string]*template.Template {
	funcs := template.FuncMap{
		"asset": func(name string) (string, error) {
			a, ok := assets[name]
			if !ok {
				return "", fmt.Errorf("no static file %q", name)
			}
			return "/static/" + name + "?v=" + a.hash, nil
		},
	}
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html"))
	pages := map[string]*template.Template{}
	for _, name := range []string{"login", "dashboard", "keys", "revoke", "upload", "error"} {
		t := template.Must(base.Clone())
		pages[name] = template.Must(t.ParseFS(templateFS, "templates/"+name+".html"))
	}
	return pages
}

// view is what every page's template gets.
type view struct {
	Title string
	// Nav names the page's entry in the navigation.
	Nav       string
	User      *userView
	CSRF      string
	RequestID string
	Data      any
}

type userView struct {
	Owner, Role, Tier string
	Admin             bool
	// Dev says the page acts as the development principal, unsigned.
	Dev bool
}

func navOf(name string) string {
	switch name {
	case "dashboard":
		return "dashboard"
	case "keys", "revoke":
		return "keys"
	case "upload":
		return "upload"
	}
	return ""
}

// render writes a page. The template runs into a buffer first, so that a
// failing template becomes an error page rather than half a page.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name string, s *session, title string, data any) {
	v := view{Title: title, Nav: navOf(name), RequestID: telemetry.RequestID(r.Context()), Data: data}
	if s != nil {
		v.CSRF = s.csrf
		if s.signedIn() || (h.dev && s.p.Method == auth.MethodDevelopment) {
			v.User = &userView{Owner: s.p.Owner, Role: s.p.Role, Tier: s.p.Tier, Admin: s.p.IsAdmin(), Dev: !s.signedIn()}
		}
	}
	var buf bytes.Buffer
	if err := h.pages[name].ExecuteTemplate(&buf, "layout.html", v); err != nil {
		h.log.ErrorContext(r.Context(), "render page", "page", name, "error", err)
		if name != "error" {
			h.renderProblem(w, r, s, &problem{Status: http.StatusInternalServerError})
			return
		}
		pageHeaders(w)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "Something went wrong on our side. Request id: %s\n", v.RequestID)
		return
	}
	pageHeaders(w)
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func pageHeaders(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Security-Policy", contentSecurityPolicy)
	// Pages hold one tenant's data, and sometimes a secret shown once.
	hd.Set("Cache-Control", "no-store")
}

// problem is a failure as a page shows it: a status, a title and a message
// for people. Err, the cause, is logged and never shown.
type problem struct {
	Status     int
	Title      string
	Message    string
	RetryAfter string
	Err        error
}

func (p *problem) Error() string {
	if p.Err != nil {
		return fmt.Sprintf("%d %s: %v", p.Status, p.Message, p.Err)
	}
	return fmt.Sprintf("%d %s", p.Status, p.Message)
}

func (p *problem) Unwrap() error { return p.Err }

var titles = map[int]string{
	http.StatusBadRequest:            "Check the form",
	http.StatusForbidden:             "Not allowed",
	http.StatusNotFound:              "Not found",
	http.StatusRequestEntityTooLarge: "Too large",
	http.StatusUnsupportedMediaType:  "Check the form",
	http.StatusTooManyRequests:       "Slow down",
	http.StatusBadGateway:            "Try again shortly",
	http.StatusServiceUnavailable:    "Try again shortly",
	http.StatusGatewayTimeout:        "Try again shortly",
}

const internalMessage = "Something went wrong on our side. If it keeps happening, tell the operators the request id below."

// toProblem turns any error into what a page may show of it.
func toProblem(err error) *problem {
	var p *problem
	if errors.As(err, &p) {
		out := *p
		if out.Title == "" {
			out.Title = titleOf(out.Status)
		}
		if out.Message == "" {
			out.Message = internalMessage
		}
		return &out
	}
	var ae *apiError
	if errors.As(err, &ae) {
		msg := ae.Message
		if ae.Code == "internal_error" || msg == "" {
			msg = internalMessage
		} else {
			msg = sentence(msg)
		}
		return &problem{Status: ae.Status, Title: titleOf(ae.Status), Message: msg, RetryAfter: ae.RetryAfter, Err: err}
	}
	switch {
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return &problem{Status: http.StatusServiceUnavailable, Title: titleOf(http.StatusServiceUnavailable),
			Message: "The service is briefly unavailable. Try again in a moment.", RetryAfter: "1", Err: err}
	}
	return &problem{Status: http.StatusInternalServerError, Title: titleOf(500), Message: internalMessage, Err: err}
}

func titleOf(status int) string {
	if t, ok := titles[status]; ok {
		return t
	}
	if status >= 500 {
		return "Something went wrong"
	}
	return http.StatusText(status)
}

// sentence capitalises an API message and ends it with a full stop.
func sentence(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return s
	}
	s = strings.ToUpper(s[:1]) + s[1:]
	if !strings.HasSuffix(s, ".") && !strings.HasSuffix(s, "?") && !strings.HasSuffix(s, "!") {
		s += "."
	}
	return s
}

// fail answers a failed request: a session that ended goes to /login;
// anything else is a page saying what went wrong without internals.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
		h.clearCookie(w, h.cookies.session)
		h.toLogin(w, r, "expired")
		return
	}
	h.renderProblem(w, r, s, toProblem(err))
}

type errorView struct {
	Status  int
	Message string
	Back    string
}

func (h *Handler) renderProblem(w http.ResponseWriter, r *http.Request, s *session, p *problem) {
	ctx := r.Context()
	if p.Status >= 500 {
		h.log.ErrorContext(ctx, "page failed", "path", r.URL.Path, "status", p.Status, "error", errString(p))
	} else {
		h.log.DebugContext(ctx, "page refused", "path", r.URL.Path, "status", p.Status, "error", errString(p))
	}
	if p.RetryAfter != "" {
		w.Header().Set("Retry-After", p.RetryAfter)
	}
	if s == nil {
		s = &session{csrf: h.csrfFromCookie(r)}
	}
	back := pageOf(r.URL.Path)
	if p.Status == http.StatusNotFound {
		back = "/"
	}
	h.render(w, r, p.Status, "error", s, p.Title, errorView{Status: p.Status, Message: p.Message, Back: back})
}

func errString(p *problem) string {
	if p.Err != nil {
		return p.Err.Error()
	}
	return p.Message
}

// Formatting for people.

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d %ciB", int64(v), "KMGTPE"[exp])
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[exp])
}

func humanMS(ms float64) string {
	switch {
	case ms < 1:
		return fmt.Sprintf("%.2f ms", ms)
	case ms < 100:
		return fmt.Sprintf("%.1f ms", ms)
	case ms < 10_000:
		return fmt.Sprintf("%.0f ms", ms)
	}
	return fmt.Sprintf("%.1f s", ms/1000)
}

func humanTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

func humanTimePtr(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return humanTime(*t)
}
