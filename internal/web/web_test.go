package web_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/web"
	"github.com/wasmwiz/wasmwiz/testdata"
)

const wantCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func TestSignInOutsideDevelopment(t *testing.T) {
	t.Parallel()
	s := newSite(t, stagingEnv)
	key, _ := s.key("acme", auth.RoleUser, "basic")
	b := s.browser()

	t.Run("pages need a session", func(t *testing.T) {
		for _, path := range []string{"/", "/api-keys", "/upload?module=x"} {
			p := b.get(path)
			want := "/login?next=" + url.QueryEscape(path)
			if path == "/" {
				want = "/login"
			}
			if p.status != http.StatusSeeOther || p.location() != want {
				t.Errorf("GET %s = %d to %q; want 303 to %q", path, p.status, p.location(), want)
			}
		}
	})

	login := b.get("/login")
	firstSecret := b.cookies["__Host-wwz_csrf"].Value
	t.Run("login page", func(t *testing.T) {
		if login.status != http.StatusOK {
			t.Fatalf("GET /login = %d; want 200", login.status)
		}
		for name, want := range map[string]string{
			"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": wantCSP,
			"Cache-Control": "no-store", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
		} {
			if got := login.header.Get(name); got != want {
				t.Errorf("%s = %q; want %q", name, got, want)
			}
		}
		// The first page a browser sees gives it its CSRF secret.
		c := b.cookies["__Host-wwz_csrf"]
		if c == nil || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
			t.Errorf("CSRF cookie = %+v; want __Host-wwz_csrf HttpOnly Secure SameSite=Strict Path=/", c)
		}
		for _, inline := range []string{"<style", " style=", "<script>", " onclick=", " onsubmit=", "javascript:"} {
			if strings.Contains(login.body, inline) {
				t.Errorf("page contains %q; the CSP forbids inline code", inline)
			}
		}
	})

	t.Run("wrong key", func(t *testing.T) {
		p := b.post("/login", url.Values{"csrf": {login.csrf(t)}, "key": {"wwz_" + strings.Repeat("x", 40)}})
		if p.status != http.StatusUnauthorized || !strings.Contains(p.body, "was not accepted") {
			t.Errorf("POST /login with an unknown key = %d %s; want 401 saying it was not accepted", p.status, text(p.body))
		}
		if p.set["__Host-wwz_session"] != nil {
			t.Errorf("a refused sign-in set a session cookie")
		}
	})

	p := b.post("/login", url.Values{"csrf": {login.csrf(t)}, "key": {key}, "next": {"/upload?module=x"}})
	t.Run("sign in", func(t *testing.T) {
		if p.status != http.StatusSeeOther || p.location() != "/upload?module=x" {
			t.Fatalf("POST /login = %d to %q; want 303 to the page asked for", p.status, p.location())
		}
		c := p.set["__Host-wwz_session"]
		if c == nil || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge <= 0 {
			t.Fatalf("session cookie = %+v; want HttpOnly Secure SameSite=Strict Path=/ with a max age", c)
		}
		if strings.HasPrefix(c.Value, "wwz_") || strings.Count(c.Value, ".") != 2 {
			t.Errorf("session cookie holds %q…; want a JWT, never the key", c.Value[:min(8, len(c.Value))])
		}
		if max := int(s.cfg.JWTTTL.Seconds()); c.MaxAge > max {
			t.Errorf("session cookie max age = %d; want at most JWT_TTL (%d s)", c.MaxAge, max)
		}
		if p.set["__Host-wwz_csrf"] == nil || p.set["__Host-wwz_csrf"].Value == firstSecret {
			t.Errorf("sign-in kept the browser's CSRF secret; want a new one")
		}
		if strings.Contains(s.logs.String(), key) {
			t.Errorf("the key reached a log line")
		}
	})

	t.Run("signed in", func(t *testing.T) {
		d := b.get("/")
		if d.status != http.StatusOK || !strings.Contains(d.body, "acme · user · basic") {
			t.Fatalf("GET / = %d %s; want the dashboard of acme", d.status, text(d.body))
		}
		if d.header.Get("Content-Security-Policy") != wantCSP {
			t.Errorf("CSP = %q; want %q", d.header.Get("Content-Security-Policy"), wantCSP)
		}
		if strings.Contains(d.body, "Development mode") {
			t.Errorf("staging page shows the development banner")
		}
		// A signed-in browser going to /login goes on.
		if l := b.get("/login?next=/api-keys"); l.status != http.StatusSeeOther || l.location() != "/api-keys" {
			t.Errorf("GET /login signed in = %d to %q; want 303 to /api-keys", l.status, l.location())
		}
	})

	t.Run("next stays on this site", func(t *testing.T) {
		for _, next := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example"} {
			b2 := s.browser()
			l := b2.get("/login")
			p := b2.post("/login", url.Values{"csrf": {l.csrf(t)}, "key": {key}, "next": {next}})
			if p.status != http.StatusSeeOther || p.location() != "/" {
				t.Errorf("sign in with next=%q goes to %q; want /", next, p.location())
			}
		}
	})

	t.Run("sign out", func(t *testing.T) {
		d := b.get("/")
		out := b.post("/logout", url.Values{"csrf": {d.csrf(t)}})
		if out.status != http.StatusSeeOther || out.location() != "/login?signed_out=1" {
			t.Fatalf("POST /logout = %d to %q; want 303 to /login?signed_out=1", out.status, out.location())
		}
		if c := out.set["__Host-wwz_session"]; c == nil || c.MaxAge >= 0 {
			t.Errorf("sign-out session cookie = %+v; want it deleted", c)
		}
		if p := b.get("/"); p.status != http.StatusSeeOther {
			t.Errorf("GET / after sign-out = %d; want 303 to /login", p.status)
		}
	})
}

func TestDevelopment(t *testing.T) {
	t.Parallel()
	s := newSite(t, nil)
	b := s.browser()
	p := b.get("/")
	if p.status != http.StatusOK || !strings.Contains(p.body, "Development mode") || !strings.Contains(p.body, "dev · admin · pro") {
		t.Fatalf("GET / in development without a session = %d %s; want the dashboard as dev", p.status, text(p.body))
	}
	c := p.set["wwz_csrf"]
	if c == nil || c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
		t.Errorf("development CSRF cookie = %+v; want wwz_csrf, HttpOnly, SameSite=Strict, not Secure", c)
	}
	if p.header.Get("Strict-Transport-Security") != "" {
		t.Errorf("development sends HSTS")
	}

	// The development principal acts through the API as the API's own
	// development principal does.
	created := b.post("/api-keys", url.Values{"csrf": {b.get("/api-keys").csrf(t)}, "name": {"from-dev"}, "owner": {"team"}, "tier": {"pro"}})
	if created.status != http.StatusSeeOther {
		t.Fatalf("POST /api-keys as dev = %d %s; want 303", created.status, text(created.body))
	}
	list := b.get("/api-keys")
	if !strings.Contains(list.body, "from-dev") || !strings.Contains(list.body, "shown this once") {
		t.Errorf("GET /api-keys after creating = %s; want the new key shown", text(list.body))
	}

	// A session that is sent is still checked.
	b.cookies["wwz_session"] = &http.Cookie{Name: "wwz_session", Value: "garbage.garbage.garbage"}
	g := b.get("/api-keys")
	if g.status != http.StatusSeeOther || g.location() != "/login?expired=1&next=%2Fapi-keys" {
		t.Errorf("GET /api-keys with a garbage session = %d to %q; want 303 to /login?expired=1&next=%%2Fapi-keys", g.status, g.location())
	}
	if c := g.set["wwz_session"]; c == nil || c.MaxAge >= 0 {
		t.Errorf("garbage session cookie = %+v; want it deleted", c)
	}
	login := b.get("/login?expired=1")
	if !strings.Contains(login.body, "Your session has ended") {
		t.Errorf("GET /login?expired=1 = %s; want it to say the session ended", text(login.body))
	}
}

func TestSessionEnds(t *testing.T) {
	t.Parallel()
	s := newSite(t, stagingEnv)
	key, k := s.key("acme", auth.RoleUser, "free")
	p := auth.Principal{KeyID: k.ID, Owner: k.Owner, Role: k.Role, Tier: k.Tier, Method: auth.MethodKey}
	expired, _, err := auth.NewTokens([]byte(s.cfg.JWTSecret), -time.Minute).Issue(p)
	if err != nil {
		t.Fatal(err)
	}
	forged, _, err := auth.NewTokens([]byte("another-secret-of-enough-length-0123456789"), time.Hour).Issue(p)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, value string
	}{
		{"expired token", expired},
		{"token of another secret", forged},
		{"garbage", "not-a-token"},
		{"an API key instead of a token", key},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := s.browser()
			b.cookies["__Host-wwz_session"] = &http.Cookie{Name: "__Host-wwz_session", Value: tt.value}
			g := b.get("/upload")
			if g.status != http.StatusSeeOther || g.location() != "/login?expired=1&next=%2Fupload" {
				t.Errorf("GET /upload = %d to %q; want 303 to /login?expired=1&next=%%2Fupload", g.status, g.location())
			}
		})
	}

	t.Run("revoked key", func(t *testing.T) {
		b := s.browser()
		b.signIn(key)
		if g := b.get("/"); g.status != http.StatusOK {
			t.Fatalf("GET / = %d; want 200", g.status)
		}
		if _, err := s.keys.RevokeKey(context.Background(), auth.Development(), k.ID); err != nil {
			t.Fatal(err)
		}
		if g := b.get("/"); g.status != http.StatusSeeOther || !strings.HasPrefix(g.location(), "/login?expired=1") {
			t.Errorf("GET / after revocation = %d to %q; want 303 to /login?expired=1", g.status, g.location())
		}
	})
}

func TestSessionRefresh(t *testing.T) {
	t.Parallel()
	env := map[string]string{"JWT_TTL": "10m"}
	for k, v := range stagingEnv {
		env[k] = v
	}
	s := newSite(t, env)
	key, _ := s.key("acme", auth.RoleUser, "free")
	b := s.browser()
	b.signIn(key)
	first := b.cookies["__Host-wwz_session"].Value

	// Pages served by a handler whose clock is 6 minutes ahead see the
	// token past half its life.
	now := time.Now().Add(6 * time.Minute)
	h := web.New(web.Deps{Config: s.cfg, Logger: slog.New(slog.DiscardHandler), API: s.Config.Handler, Auth: s.keys,
		Store: s.store, Now: func() time.Time { return now }})
	ahead := httptest.NewServer(h)
	defer ahead.Close()
	b.base = ahead.URL
	p := b.get("/upload")
	if p.status != http.StatusOK {
		t.Fatalf("GET /upload = %d; want 200", p.status)
	}
	c := p.set["__Host-wwz_session"]
	if c == nil || c.Value == first {
		t.Fatalf("session cookie after half its life = %+v; want a new token", c)
	}
	// The forms of the page rendered with the old token still hold.
	b.base = s.URL
	if g := b.get("/"); g.status != http.StatusOK {
		t.Errorf("GET / with the refreshed token = %d; want 200", g.status)
	}
}

func TestCSRF(t *testing.T) {
	t.Parallel()
	s := newSite(t, stagingEnv)
	key, _ := s.key("acme", auth.RoleAdmin, "pro")
	b := s.browser()
	b.signIn(key)
	token := b.get("/api-keys").csrf(t)
	other := s.browser()
	otherToken := other.get("/login").csrf(t)

	tests := []struct {
		name    string
		form    url.Values
		headers []string
		cookie  bool // send the CSRF cookie
		status  int
	}{
		{name: "no token", form: url.Values{}, cookie: true, status: 403},
		{name: "wrong token", form: url.Values{"csrf": {"AAAA"}}, cookie: true, status: 403},
		{name: "another browser's token", form: url.Values{"csrf": {otherToken}}, cookie: true, status: 403},
		{name: "token without its cookie", form: url.Values{"csrf": {token}}, cookie: false, status: 403},
		{name: "cross-site fetch", form: url.Values{"csrf": {token}}, cookie: true, status: 403,
			headers: []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}},
		{name: "cross-origin without fetch metadata", form: url.Values{"csrf": {token}}, cookie: true, status: 403,
			headers: []string{"Sec-Fetch-Site", "", "Origin", "https://evil.example"}},
		{name: "same origin", form: url.Values{"csrf": {token}}, cookie: true, status: 303},
		{name: "no fetch metadata nor origin (old browser)", form: url.Values{"csrf": {token}}, cookie: true, status: 303,
			headers: []string{"Sec-Fetch-Site", "", "Origin", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			form := url.Values{"name": {"csrf " + tt.name}}
			for k, v := range tt.form {
				form[k] = v
			}
			saved := b.cookies["__Host-wwz_csrf"]
			if !tt.cookie {
				delete(b.cookies, "__Host-wwz_csrf")
			}
			p := b.post("/api-keys", form, tt.headers...)
			b.cookies["__Host-wwz_csrf"] = saved
			if p.status != tt.status {
				t.Fatalf("POST /api-keys = %d %s; want %d", p.status, text(p.body), tt.status)
			}
			list := b.get("/api-keys")
			created := strings.Contains(list.body, "csrf "+tt.name)
			if created != (tt.status == 303) {
				t.Errorf("key created = %v; want %v", created, tt.status == 303)
			}
			if tt.status == 403 {
				if !strings.Contains(p.body, "Form refused") || p.header.Get("Content-Type") != "text/html; charset=utf-8" {
					t.Errorf("refusal = %s; want a friendly HTML page", text(p.body))
				}
			}
		})
	}

	t.Run("every form carries the token", func(t *testing.T) {
		for _, path := range []string{"/", "/api-keys", "/upload"} {
			body := b.get(path).body
			forms := strings.Count(body, "<form")
			tokens := strings.Count(body, `name="csrf" value="`+token+`"`)
			if forms == 0 || forms != tokens {
				t.Errorf("GET %s: %d forms, %d with the token", path, forms, tokens)
			}
		}
	})

	t.Run("login form", func(t *testing.T) {
		fresh := s.browser()
		fresh.get("/login")
		p := fresh.post("/login", url.Values{"key": {key}})
		if p.status != http.StatusForbidden || p.set["__Host-wwz_session"] != nil {
			t.Errorf("POST /login without token = %d; want 403 and no session", p.status)
		}
	})
}

func TestKeysPage(t *testing.T) {
	t.Parallel()
	s := newSite(t, stagingEnv)
	userKey, user := s.key("acme", auth.RoleUser, "basic")
	s.key("globex", auth.RoleUser, "pro")
	b := s.browser()
	b.signIn(userKey)
	list := b.get("/api-keys")
	token := list.csrf(t)

	t.Run("tenancy", func(t *testing.T) {
		if !strings.Contains(list.body, "acme-user") || strings.Contains(list.body, "globex") {
			t.Errorf("keys of acme's user = %s; want acme's keys only", text(list.body))
		}
		if strings.Contains(list.body, `name="role"`) || strings.Contains(list.body, `value="pro"`) {
			t.Errorf("a user's form offers a role or a higher tier")
		}
		if !strings.Contains(list.body, "this session") {
			t.Errorf("the session's own key is not marked")
		}
	})

	var newKey string
	t.Run("create shows the key once", func(t *testing.T) {
		p := b.post("/api-keys", url.Values{"csrf": {token}, "name": {"<b>deploy</b>"}, "tier": {"free"}})
		if p.status != http.StatusSeeOther || p.location() != "/api-keys" {
			t.Fatalf("POST /api-keys = %d to %q; want 303 to /api-keys", p.status, p.location())
		}
		if strings.Contains(p.body, "wwz_") || strings.Contains(p.location(), "wwz_") {
			t.Errorf("the redirect carries the key in clear")
		}
		once := b.get("/api-keys")
		m := regexp.MustCompile(`id="new-key" class="secret" type="text" value="(wwz_[A-Za-z0-9]+)"`).FindStringSubmatch(once.body)
		if m == nil {
			t.Fatalf("GET /api-keys after creating = %s; want the new key", text(once.body))
		}
		newKey = m[1]
		if strings.Contains(once.body, "<b>deploy</b>") || !strings.Contains(once.body, "&lt;b&gt;deploy&lt;/b&gt;") {
			t.Errorf("the key's name is not escaped")
		}
		if c := once.set["__Host-wwz_newkey"]; c == nil || c.MaxAge >= 0 {
			t.Errorf("new-key cookie after showing = %+v; want it deleted", c)
		}
		again := b.get("/api-keys")
		if strings.Contains(again.body, newKey) || strings.Contains(again.body, "shown this once") {
			t.Errorf("the key is shown a second time")
		}
		// The key works.
		if _, err := s.keys.Authenticate(context.Background(), "", newKey); err != nil {
			t.Errorf("Authenticate(new key) = %v", err)
		}
	})

	t.Run("refused creation stays on the form", func(t *testing.T) {
		p := b.post("/api-keys", url.Values{"csrf": {token}, "name": {"escalate"}, "role": {"admin"}})
		if p.status != http.StatusForbidden || !strings.Contains(p.body, "A user key cannot create admin keys.") ||
			!strings.Contains(p.body, `value="escalate"`) {
			t.Errorf("POST /api-keys role=admin by a user = %d %s; want 403 with the API's reason, form kept", p.status, text(p.body))
		}
		p = b.post("/api-keys", url.Values{"csrf": {token}, "name": {""}})
		if p.status != http.StatusBadRequest || !strings.Contains(p.body, "Name must be 1 to 128 characters.") {
			t.Errorf("POST /api-keys without name = %d %s; want 400 naming the field", p.status, text(p.body))
		}
	})

	t.Run("revoke asks first", func(t *testing.T) {
		k, err := s.keys.Authenticate(context.Background(), "", newKey)
		if err != nil {
			t.Fatal(err)
		}
		path := "/api-keys/" + k.KeyID.String() + "/revoke"
		ask := b.post(path, url.Values{"csrf": {token}, "name": {"deploy"}, "prefix": {"wwz_abc"}})
		if ask.status != http.StatusOK || !strings.Contains(ask.body, "Revoke key?") || !strings.Contains(ask.body, `name="confirm" value="yes"`) {
			t.Fatalf("POST %s without confirm = %d %s; want a confirmation page", path, ask.status, text(ask.body))
		}
		if _, err := s.keys.Authenticate(context.Background(), "", newKey); err != nil {
			t.Fatalf("the key was revoked before confirmation: %v", err)
		}
		done := b.post(path, url.Values{"csrf": {ask.csrf(t)}, "confirm": {"yes"}})
		if done.status != http.StatusSeeOther || done.location() != "/api-keys?revoked=1" {
			t.Fatalf("POST %s confirmed = %d to %q; want 303 to /api-keys?revoked=1", path, done.status, done.location())
		}
		if _, err := s.keys.Authenticate(context.Background(), "", newKey); err == nil {
			t.Errorf("the key still authenticates after revocation")
		}
		after := b.get("/api-keys?revoked=1")
		if !strings.Contains(after.body, "The key was revoked") || !strings.Contains(after.body, "revoked</span>") {
			t.Errorf("list after revocation = %s; want the notice and the key marked revoked", text(after.body))
		}
	})

	t.Run("another owner's key is not found", func(t *testing.T) {
		_, theirs := s.key("globex", auth.RoleUser, "free")
		p := b.post("/api-keys/"+theirs.ID.String()+"/revoke", url.Values{"csrf": {token}, "confirm": {"yes"}})
		if p.status != http.StatusNotFound {
			t.Errorf("revoke globex's key as acme = %d; want 404", p.status)
		}
	})

	t.Run("revoking the session's own key signs out", func(t *testing.T) {
		p := b.post("/api-keys/"+user.ID.String()+"/revoke", url.Values{"csrf": {token}, "confirm": {"yes"}})
		if p.status != http.StatusSeeOther || p.location() != "/login?revoked=1" {
			t.Errorf("revoke own key = %d to %q; want 303 to /login?revoked=1", p.status, p.location())
		}
		if g := b.get("/"); g.status != http.StatusSeeOther {
			t.Errorf("GET / after revoking own key = %d; want 303", g.status)
		}
	})
}

func TestUploadAndRun(t *testing.T) {
	t.Parallel()
	s := newSite(t, stagingEnv)
	key, _ := s.key("acme", auth.RoleUser, "free")
	b := s.browser()
	b.signIn(key)
	token := b.get("/upload").csrf(t)

	up := b.postMultipart("/upload", "csrf", token, "file", testdata.Module("echo"))
	if up.status != http.StatusSeeOther || !strings.HasPrefix(up.location(), "/upload?uploaded=1&module=") {
		t.Fatalf("POST /upload = %d to %q %s; want 303 to /upload?uploaded=1&module=…", up.status, up.location(), text(up.body))
	}
	id := strings.TrimPrefix(up.location(), "/upload?uploaded=1&module=")
	shown := b.get(up.location())
	if !strings.Contains(shown.body, "Uploaded: file.wasm") || !strings.Contains(shown.body, id) {
		t.Fatalf("GET %s = %s; want the uploaded module", up.location(), text(shown.body))
	}

	t.Run("run", func(t *testing.T) {
		p := b.postMultipart("/upload/run", "csrf", token, "module_id", id, "input", "line one\r\nline two")
		if p.status != http.StatusOK {
			t.Fatalf("POST /upload/run = %d %s; want 200", p.status, text(p.body))
		}
		if got := string(s.exec.last().Stdin); got != "line one\nline two" {
			t.Errorf("stdin = %q; want the input with \\n line breaks", got)
		}
		if !strings.Contains(p.body, `<pre id="stdout">line one`+"\n"+`line two</pre>`) || !strings.Contains(p.body, `id="result-status">ok<`) {
			t.Errorf("result page = %s; want stdout and status ok", text(p.body))
		}
		if !strings.Contains(p.body, "line one\nline two</textarea>") {
			t.Errorf("the input is not kept in the form")
		}
	})

	t.Run("invalid module", func(t *testing.T) {
		p := b.postMultipart("/upload", "csrf", token, "file", []byte("not wasm at all"))
		if p.status != http.StatusBadRequest || !strings.Contains(p.body, `id="upload-error"`) {
			t.Errorf("upload garbage = %d %s; want 400 with the reason beside the form", p.status, text(p.body))
		}
	})

	t.Run("no file", func(t *testing.T) {
		p := b.postMultipart("/upload", "csrf", token, "name", "x")
		if p.status != http.StatusBadRequest || !strings.Contains(p.body, "Choose a .wasm file") {
			t.Errorf("upload without file = %d %s; want 400 asking for a file", p.status, text(p.body))
		}
	})

	t.Run("no worker", func(t *testing.T) {
		s.exec.mu.Lock()
		s.exec.reply = func(protocol.Request) (protocol.Reply, error) { return protocol.Reply{}, protocol.ErrNoWorkers }
		s.exec.mu.Unlock()
		defer func() { s.exec.mu.Lock(); s.exec.reply = nil; s.exec.mu.Unlock() }()
		p := b.postMultipart("/upload/run", "csrf", token, "module_id", id, "input", "x")
		if p.status != http.StatusServiceUnavailable || !strings.Contains(p.body, "No worker is available") || p.header.Get("Retry-After") == "" {
			t.Errorf("run without workers = %d %s; want 503 saying no worker is available, with Retry-After", p.status, text(p.body))
		}
	})

	t.Run("worker failure shows no internals", func(t *testing.T) {
		s.exec.mu.Lock()
		s.exec.reply = func(protocol.Request) (protocol.Reply, error) {
			return protocol.Reply{}, errTest("dial tcp 10.1.2.3:4222: secret internals")
		}
		s.exec.mu.Unlock()
		defer func() { s.exec.mu.Lock(); s.exec.reply = nil; s.exec.mu.Unlock() }()
		p := b.postMultipart("/upload/run", "csrf", token, "module_id", id, "input", "x")
		if p.status != http.StatusBadGateway || strings.Contains(p.body, "10.1.2.3") || strings.Contains(p.body, "secret") {
			t.Errorf("run with a broken worker = %d %s; want 502 without internals", p.status, text(p.body))
		}
	})

	t.Run("another owner's module", func(t *testing.T) {
		theirs, err := s.store.CreateModule(context.Background(), store.Module{ID: uuid.Must(uuid.NewV7()), Owner: "globex", Name: "theirs",
			SHA256: strings.Repeat("ab", 32), Exports: []string{"_start"}, WASI: true, CreatedAt: time.Now()}, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		p := b.postMultipart("/upload/run", "csrf", token, "module_id", theirs.ID.String(), "input", "x")
		if p.status != http.StatusNotFound || !strings.Contains(p.body, "not found") {
			t.Errorf("run globex's module as acme = %d %s; want 404", p.status, text(p.body))
		}
		if list := b.get("/upload?module=" + theirs.ID.String()); strings.Contains(list.body, "theirs") {
			t.Errorf("acme's upload page shows globex's module")
		}
	})

	t.Run("too large", func(t *testing.T) {
		big := make([]byte, s.cfg.MaxWASMSize+100<<10)
		p := b.postMultipart("/upload", "csrf", token, "file", big)
		if p.status != http.StatusRequestEntityTooLarge || !strings.Contains(p.body, "MAX_WASM_SIZE") {
			t.Errorf("upload over the limit = %d %s; want 413 naming the limit", p.status, text(p.body))
		}
	})

	t.Run("form action opened as a page", func(t *testing.T) {
		if p := b.get("/upload/run"); p.status != http.StatusSeeOther || p.location() != "/upload" {
			t.Errorf("GET /upload/run = %d to %q; want 303 to /upload", p.status, p.location())
		}
	})
}

type errTest string

func (e errTest) Error() string { return string(e) }

func TestDashboard(t *testing.T) {
	t.Parallel()
	s := newSite(t, stagingEnv)
	key, _ := s.key("acme", auth.RoleUser, "free")
	adminKey, _ := s.key("ops", auth.RoleAdmin, "pro")
	ctx := context.Background()
	mod, err := s.store.CreateModule(ctx, store.Module{ID: uuid.Must(uuid.NewV7()), Owner: "acme", Name: "hello.wasm",
		SHA256: strings.Repeat("cd", 32), Exports: []string{"_start"}, WASI: true, CreatedAt: time.Now()}, []byte("y"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var recs []store.Execution
	for i, status := range []string{"ok", "ok", "ok", "trap"} {
		recs = append(recs, store.Execution{ID: uuid.Must(uuid.NewV7()), Owner: "acme", ModuleID: mod.ID, Status: status,
			DurationMS: float64(i + 1), CreatedAt: now.Add(-time.Duration(i) * time.Hour)})
	}
	recs = append(recs, store.Execution{ID: uuid.Must(uuid.NewV7()), Owner: "globex", Status: "ok", CreatedAt: now})
	if err := s.store.InsertExecutions(ctx, recs); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, key                                string
		modules, executions, success, scopeLabel string
	}{
		{"user", key, "1", "4", "75.0 %", "owner acme"},
		{"admin", adminKey, "1", "5", "80.0 %", "all owners"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := s.browser()
			b.signIn(tt.key)
			p := b.get("/")
			if p.status != http.StatusOK {
				t.Fatalf("GET / = %d", p.status)
			}
			for id, want := range map[string]string{"stat-modules": tt.modules, "stat-executions": tt.executions,
				"stat-success": tt.success, "stat-workers": "3"} {
				m := regexp.MustCompile(`id="` + id + `">([^<]*)<`).FindStringSubmatch(p.body)
				if m == nil || m[1] != want {
					t.Errorf("%s = %v; want %q", id, m, want)
				}
			}
			if !strings.Contains(p.body, tt.scopeLabel) {
				t.Errorf("dashboard does not say its scope %q", tt.scopeLabel)
			}
			if n := strings.Count(p.body, `class="bar-ok"`); n != 24 {
				t.Errorf("chart has %d bars; want 24", n)
			}
			if !strings.Contains(p.body, "hello.wasm") || !strings.Contains(p.body, `class="status bad">trap<`) {
				t.Errorf("latest executions = %s; want hello.wasm and a trap", text(p.body))
			}
		})
	}
}

func TestStaticFiles(t *testing.T) {
	t.Parallel()
	s := newSite(t, nil)
	b := s.browser()
	page := b.get("/").body
	for _, tt := range []struct{ name, contentType string }{
		{"app.css", "text/css; charset=utf-8"},
		{"app.js", "text/javascript; charset=utf-8"},
		{"favicon.svg", "image/svg+xml"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := regexp.MustCompile(`/static/` + regexp.QuoteMeta(tt.name) + `\?v=([0-9a-f]+)`).FindStringSubmatch(page)
			if m == nil {
				t.Fatalf("page does not link %s with a version", tt.name)
			}
			v := b.get(m[0])
			if v.status != 200 || v.header.Get("Content-Type") != tt.contentType ||
				v.header.Get("Cache-Control") != "public, max-age=31536000, immutable" || len(v.body) == 0 {
				t.Errorf("GET %s = %d %q %q; want 200, %s, cached a year", m[0], v.status, v.header.Get("Content-Type"),
					v.header.Get("Cache-Control"), tt.contentType)
			}
			stale := b.get("/static/" + tt.name + "?v=old")
			if stale.header.Get("Cache-Control") != "public, max-age=300" {
				t.Errorf("GET with another version: Cache-Control = %q; want minutes", stale.header.Get("Cache-Control"))
			}
			req, _ := http.NewRequest(http.MethodGet, s.URL+m[0], nil)
			req.Header.Set("If-None-Match", v.header.Get("ETag"))
			if nm := b.do(req); nm.status != http.StatusNotModified {
				t.Errorf("GET with If-None-Match = %d; want 304", nm.status)
			}
		})
	}
	t.Run("unknown file", func(t *testing.T) {
		p := b.get("/static/nope.js")
		if p.status != http.StatusNotFound || p.header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("GET /static/nope.js = %d %q; want an HTML 404", p.status, p.header.Get("Content-Type"))
		}
	})
}
