package web_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/config"
	"github.com/wasmwiz/wasmwiz/internal/httpapi"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/runner"
	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

// site is the api with its pages on a fresh database, a fake worker fleet
// and no rate limiter.
type site struct {
	*httptest.Server
	t     *testing.T
	cfg   config.Config
	store *store.Store
	keys  *auth.Service
	exec  *fakeExecutor
	logs  *testenv.SyncBuffer
}

var stagingEnv = map[string]string{
	"ENVIRONMENT": "staging",
	"API_SALT":    "web-test-salt-0123456789",
	"JWT_SECRET":  "web-test-jwt-secret-0123456789-0123456789",
}

type fakeExecutor struct {
	mu    sync.Mutex
	reqs  []protocol.Request
	reply func(protocol.Request) (protocol.Reply, error)
}

func (f *fakeExecutor) Execute(_ context.Context, req protocol.Request) (protocol.Reply, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	reply := f.reply
	f.mu.Unlock()
	if reply == nil {
		return protocol.Reply{Status: "ok", Stdout: req.Stdin, Duration: 3 * time.Millisecond, MemoryPeak: 65536, Worker: "fake-1"}, nil
	}
	return reply(req)
}

func (f *fakeExecutor) last() protocol.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		return protocol.Request{}
	}
	return f.reqs[len(f.reqs)-1]
}

func newSite(t *testing.T, env map[string]string) *site {
	t.Helper()
	st, _ := testenv.Store(t)
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	v, err := runner.NewValidator(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close(context.Background()) })
	keys := auth.NewService(st, auth.Options{Salt: []byte(cfg.APISalt), JWTSecret: []byte(cfg.JWTSecret),
		JWTTTL: cfg.JWTTTL, Development: cfg.IsDevelopment()})
	exec := &fakeExecutor{}
	logs := &testenv.SyncBuffer{}
	api := httpapi.New(httpapi.Deps{
		Config: cfg, Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Store: st, Validator: v, Executor: exec, Keys: keys, Version: "test",
		Checks: httpapi.HealthChecks{
			Database: st.Ping,
			Workers:  func(context.Context) (int, error) { return 3, nil },
		},
	})
	ts := httptest.NewServer(api)
	t.Cleanup(ts.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", tail(logs.String(), 30))
		}
	})
	return &site{Server: ts, t: t, cfg: cfg, store: st, keys: keys, exec: exec, logs: logs}
}

// key creates a key on the command line's path and returns its secret.
func (s *site) key(owner, role, tier string) (string, store.APIKey) {
	s.t.Helper()
	k, secret, err := s.keys.Bootstrap(context.Background(), auth.NewKeyRequest{Name: owner + "-" + role, Owner: owner, Role: role, Tier: tier})
	if err != nil {
		s.t.Fatal(err)
	}
	return secret, k
}

// browser is a cookie-keeping client that does not follow redirects. It
// keeps Secure cookies over plain HTTP, as browsers do for localhost, so
// that the staging configuration can be tested without TLS.
type browser struct {
	t       *testing.T
	base    string
	cookies map[string]*http.Cookie
}

func (s *site) browser() *browser {
	return &browser{t: s.t, base: s.URL, cookies: map[string]*http.Cookie{}}
}

type page struct {
	status int
	header http.Header
	body   string
	// set are the cookies the answer set, by name.
	set map[string]*http.Cookie
}

func (p page) location() string { return p.header.Get("Location") }

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the token of the page's forms.
func (p page) csrf(t *testing.T) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no csrf field in page:\n%s", p.body)
	}
	return m[1]
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	for _, c := range b.cookies {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	p := page{status: res.StatusCode, header: res.Header, body: string(body), set: map[string]*http.Cookie{}}
	for _, c := range res.Cookies() {
		p.set[c.Name] = c
		if c.MaxAge < 0 || c.Value == "" {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c
		}
	}
	return p
}

func (b *browser) get(path string) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.base+path, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

// post sends a form as a browser on this site would (Sec-Fetch-Site and
// Origin), unless headers say otherwise ("" deletes a header).
func (b *browser) post(path string, form url.Values, headers ...string) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(browserHeaders(req, b.base, headers))
}

// postMultipart sends a multipart form; a []byte value is a file.
func (b *browser) postMultipart(path string, fields ...any) page {
	b.t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		name := fields[i].(string)
		switch v := fields[i+1].(type) {
		case []byte:
			fw, _ := w.CreateFormFile(name, name+".wasm")
			fw.Write(v)
		case string:
			w.WriteField(name, v)
		}
	}
	w.Close()
	req, err := http.NewRequest(http.MethodPost, b.base+path, &buf)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", w.FormDataContentType())
	return b.do(browserHeaders(req, b.base, nil))
}

func browserHeaders(req *http.Request, base string, headers []string) *http.Request {
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Origin", base)
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	return req
}

// signIn signs the browser in with key and checks where it lands.
func (b *browser) signIn(key string) {
	b.t.Helper()
	login := b.get("/login")
	if login.status != http.StatusOK {
		b.t.Fatalf("GET /login = %d; want 200", login.status)
	}
	p := b.post("/login", url.Values{"csrf": {login.csrf(b.t)}, "key": {key}, "next": {"/"}})
	if p.status != http.StatusSeeOther || p.location() != "/" {
		b.t.Fatalf("POST /login = %d to %q; want 303 to /\n%s", p.status, p.location(), p.body)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// text strips a page to its visible text, roughly, for Contains checks.
func text(html string) string {
	s := regexp.MustCompile(`(?s)<[^>]*>`).ReplaceAllString(html, " ")
	return strings.Join(strings.Fields(s), " ")
}
