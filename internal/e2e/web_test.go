package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
	"github.com/wasmwiz/wasmwiz/testdata"
)

// defaultChromium is where Debian's chromium package puts the browser;
// scripts/install_test_tools.sh installs it. CHROMIUM overrides the path.
const defaultChromium = "/usr/bin/chromium"

func requireChromium(t *testing.T) string {
	t.Helper()
	path := defaultChromium
	if p := os.Getenv("CHROMIUM"); p != "" {
		path = p
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the browser tests need Chromium at %s (%v); install it with scripts/install_test_tools.sh "+
			"(apt-get install -y chromium), or point CHROMIUM at a Chromium binary", path, err)
	}
	return path
}

// artifactsDir is where the screenshots go: $TEST_ARTIFACTS/web, else a
// fixed directory under the system's temporary directory, so that the
// last run's pictures are easy to find.
func artifactsDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("TEST_ARTIFACTS")
	if root == "" {
		root = filepath.Join(os.TempDir(), "wasmwiz-test-artifacts")
	}
	dir := filepath.Join(root, "web")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts directory: %v", err)
	}
	t.Logf("screenshots of the pages are saved in %s", dir)
	return dir
}

// newBrowser starts headless Chromium with a fresh profile. The flags keep
// it from reaching the network on its own and from needing a GPU or a
// sandbox (containers run tests as root).
func newBrowser(t *testing.T, chromium string) context.Context {
	t.Helper()
	out := &syncBuffer{}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.CombinedOutput(out),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		cancel()
		if t.Failed() {
			t.Logf("--- chromium output (last lines):\n%s", tail(out.String(), 20))
		}
	})
	// Start the browser now, so that a missing library fails here, clearly.
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium (%s): %v\n%s", chromium, err, tail(out.String(), 20))
	}
	return bctx
}

// TestWebPagesInBrowser drives the pages of a real api (and a worker) in
// headless Chromium, as a person would, outside development: sign in,
// create a key and see it once, revoke it, upload a module, run it, watch
// the dashboard count the run, sign out; and with a plain HTTP client,
// refuse a form without its CSRF token.
func TestWebPagesInBrowser(t *testing.T) {
	chromium := requireChromium(t)
	p := startPlatform(t, 1, map[string]string{
		"ENVIRONMENT": "staging",
		"API_SALT":    "e2e-web-salt-0123456789abcdef",
		"JWT_SECRET":  "e2e-web-jwt-secret-0123456789abcdef-0123456789",
	})
	key := p.createKey("acme", "user", "pro")
	shots := artifactsDir(t)
	ctx := newBrowser(t, chromium)

	do := func(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(t *testing.T, sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	location := func(t *testing.T) string {
		t.Helper()
		loc, err := chromedp.Run(ctx, chromedp.Location())
		if err != nil {
			t.Fatalf("location: %v", err)
		}
		return strings.TrimPrefix(loc, p.url)
	}
	screenshot := func(t *testing.T, name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// click clicks and waits for the page that follows to load.
	click := func(t *testing.T, sel string) {
		t.Helper()
		_, err := chromedp.Run(ctx, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.CSS(sel))))
		if err != nil {
			t.Fatalf("click %s: %v", sel, err)
		}
	}
	executions := func(t *testing.T) int {
		t.Helper()
		n, err := strconv.Atoi(text(t, "#stat-executions"))
		if err != nil {
			t.Fatalf("executions figure: %v", err)
		}
		return n
	}

	var before int
	ok := t.Run("sign in", func(t *testing.T) {
		do(t, "open /", chromedp.Navigate(p.url+"/"))
		if loc := location(t); loc != "/login" {
			t.Fatalf("GET / without a session lands on %q; want /login", loc)
		}
		screenshot(t, "01-login")
		do(t, "fill in the key", chromedp.SendKeys(chromedp.ID("key"), key))
		click(t, "form[action='/login'] button[type=submit]")
		if loc := location(t); loc != "/" {
			t.Fatalf("after signing in the browser is at %q; want /", loc)
		}
		if who := text(t, ".who .badge"); who != "acme · user · pro" {
			t.Errorf("signed in as %q; want acme · user · pro", who)
		}
		before = executions(t)
		screenshot(t, "02-dashboard")
	})
	if !ok {
		return
	}

	var newKey string
	ok = t.Run("create a key and see it once", func(t *testing.T) {
		do(t, "open /api-keys", chromedp.Navigate(p.url+"/api-keys"))
		do(t, "fill in the form", chromedp.SendKeys(chromedp.CSS("input[name=name]"), "from the browser"))
		click(t, "form[action='/api-keys'] button[type=submit]")
		v, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("new-key")))
		if err != nil {
			t.Fatalf("the new key is not shown: %v", err)
		}
		if !strings.HasPrefix(v, "wwz_") {
			t.Fatalf("new key = %q; want wwz_…", v)
		}
		newKey = v
		// The script ran under the CSP: it revealed the copy button.
		do(t, "copy button", chromedp.WaitVisible(chromedp.CSS("button[data-copy=new-key]")))
		screenshot(t, "03-api-keys-new")
		if r := p.do("GET", "/api/auth/keys", "", nil, "Authorization", "Bearer "+newKey); r.status != 200 {
			t.Errorf("the new key does not work: GET /api/auth/keys = %d", r.status)
		}
		do(t, "reload", chromedp.Reload())
		n, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.ID("new-key"), chromedp.AtLeast(0)))
		if err != nil {
			t.Fatal(err)
		}
		if len(n) != 0 {
			t.Errorf("after a reload the key is shown again")
		}
	})
	if !ok {
		return
	}

	t.Run("revoke it", func(t *testing.T) {
		// The script asks with a dialog: accept it.
		dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
		go func() {
			for ev, err := range dialogs {
				if err != nil {
					return
				}
				if !strings.Contains(ev.Message, "Revoke key") {
					t.Errorf("dialog says %q; want it to ask about revoking", ev.Message)
				}
				chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
				return
			}
		}()
		var list struct {
			Keys []struct{ ID, Prefix string }
		}
		if err := jsonDecode(p.do("GET", "/api/auth/keys", "", nil, "Authorization", "Bearer "+key).body, &list); err != nil {
			t.Fatal(err)
		}
		id := ""
		for _, k := range list.Keys {
			if strings.HasPrefix(newKey, k.Prefix) {
				id = k.ID
			}
		}
		click(t, `tr[data-key-id="`+id+`"] form[data-confirm] button`)
		if loc := location(t); loc != "/api-keys?revoked=1" {
			t.Fatalf("after revoking the browser is at %q; want /api-keys?revoked=1", loc)
		}
		if notice := text(t, ".notice"); !strings.Contains(notice, "revoked") {
			t.Errorf("notice = %q; want it to say the key was revoked", notice)
		}
		screenshot(t, "04-api-keys-revoked")
		testenv.Eventually(t, 10*time.Second, "the revoked key refused", func() bool {
			return p.do("GET", "/api/auth/keys", "", nil, "Authorization", "Bearer "+newKey).status == 401
		})
	})

	t.Run("revoke without the script", func(t *testing.T) {
		do(t, "create another key", chromedp.Navigate(p.url+"/api-keys"),
			chromedp.SendKeys(chromedp.CSS("input[name=name]"), "second"))
		click(t, "form[action='/api-keys'] button[type=submit]")
		// Sent as a browser without script sends it: no dialog, no
		// confirm=yes; the server asks on a page of its own.
		_, err := chromedp.Run(ctx, chromedp.WaitEvent(page.LoadEventFired, nil,
			chromedp.Evaluate[any](`document.querySelector("tr[data-key-id]:not(.revoked) form[data-confirm]").submit()`)))
		if err != nil {
			t.Fatal(err)
		}
		if h := text(t, "h1"); h != "Revoke key?" {
			t.Fatalf("heading = %q; want the confirmation page", h)
		}
		screenshot(t, "05-revoke-confirm")
		click(t, "#confirm-revoke")
		if loc := location(t); loc != "/api-keys?revoked=1" {
			t.Errorf("after confirming the browser is at %q; want /api-keys?revoked=1", loc)
		}
	})

	ok = t.Run("upload a module and run it", func(t *testing.T) {
		wasm := filepath.Join(t.TempDir(), "echo.wasm")
		if err := os.WriteFile(wasm, testdata.Module("echo"), 0o644); err != nil {
			t.Fatal(err)
		}
		do(t, "open /upload", chromedp.Navigate(p.url+"/upload"),
			chromedp.SetUploadFiles(chromedp.CSS("input[name=file]"), []string{wasm}))
		// The script sends the form with progress, then loads the page
		// the server redirected to.
		click(t, "form[action='/upload'] button[type=submit]")
		do(t, "the uploaded module", chromedp.WaitVisible(chromedp.ID("module")))
		if loc := location(t); !strings.HasPrefix(loc, "/upload?uploaded=1&module=") {
			t.Errorf("after the upload the browser is at %q; want /upload?uploaded=1&module=…", loc)
		}
		if h := text(t, "#module h2"); h != "Uploaded: echo.wasm" {
			t.Errorf("module heading = %q; want Uploaded: echo.wasm", h)
		}
		screenshot(t, "06-upload")

		do(t, "type the input", chromedp.SendKeys(chromedp.ID("input"), "hello from the browser\nsecond line"))
		click(t, "#run")
		if got := text(t, "#result-status"); got != "ok" {
			t.Fatalf("status = %q (page: %s); want ok", got, text(t, "main"))
		}
		if got := text(t, "#stdout"); got != "hello from the browser\nsecond line" {
			t.Errorf("stdout = %q; want the input back", got)
		}
		screenshot(t, "07-run")
	})
	if !ok {
		return
	}

	t.Run("the dashboard counts", func(t *testing.T) {
		// The run above is recorded off the request path; three more
		// executions, one failed, come straight from the database.
		st, err := store.Open(context.Background(), p.env["DATABASE_URL"])
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		now := time.Now().UTC()
		var recs []store.Execution
		for i, status := range []string{"ok", "trap", "ok"} {
			recs = append(recs, store.Execution{ID: uuid.Must(uuid.NewV7()), Owner: "acme", Status: status,
				DurationMS: float64(2 + i), CreatedAt: now.Add(-time.Duration(3*i+2) * time.Hour)})
		}
		if err := st.InsertExecutions(context.Background(), recs); err != nil {
			t.Fatal(err)
		}
		want := before + 1 + len(recs)
		var got int
		testenv.Eventually(t, 10*time.Second, fmt.Sprintf("dashboard shows %d executions", want), func() bool {
			do(t, "open /", chromedp.Navigate(p.url+"/"))
			got = executions(t)
			return got == want
		})
		if w := text(t, "#stat-workers"); w != "1" {
			t.Errorf("workers online = %q; want 1", w)
		}
		if rows := text(t, "#recent tbody"); !strings.Contains(rows, "echo.wasm") || !strings.Contains(rows, "trap") {
			t.Errorf("latest executions = %q; want the run of echo.wasm and the trap", rows)
		}
		screenshot(t, "08-dashboard-after")
	})

	t.Run("a form without its CSRF token is refused", func(t *testing.T) {
		form := url.Values{"name": {"forged"}}
		for _, path := range []string{"/api-keys", "/login", "/logout", "/upload/run"} {
			r := p.do("POST", path, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
			if r.status != http.StatusForbidden || !strings.Contains(string(r.body), "Form refused") ||
				r.header.Get("Content-Type") != "text/html; charset=utf-8" {
				t.Errorf("POST %s without a token = %d %q; want 403 and a page saying the form was refused",
					path, r.status, r.header.Get("Content-Type"))
			}
		}
		// In the browser, a form whose token was tampered with.
		do(t, "tamper with a form", chromedp.Navigate(p.url+"/api-keys"),
			chromedp.SetValue(chromedp.CSS("form[action='/api-keys'] input[name=csrf]"), "forged"),
			chromedp.SendKeys(chromedp.CSS("input[name=name]"), "forged"))
		click(t, "form[action='/api-keys'] button[type=submit]")
		if h := text(t, "h1"); h != "Form refused" {
			t.Errorf("heading = %q; want Form refused", h)
		}
		screenshot(t, "09-form-refused")
	})

	t.Run("a bad session goes to /login", func(t *testing.T) {
		for _, value := range []string{"garbage", expiredLookingToken} {
			_, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{
				Name: "__Host-wwz_session", Value: value, URL: p.url + "/", Path: "/",
				Secure: ptr(true), HTTPOnly: ptr(true), SameSite: network.CookieSameSiteStrict,
			})
			if err != nil {
				t.Fatalf("set cookie: %v", err)
			}
			do(t, "open /upload", chromedp.Navigate(p.url+"/upload"))
			if loc := location(t); loc != "/login?expired=1&next=%2Fupload" {
				t.Errorf("with session %.10q… the browser is at %q; want /login?expired=1&next=%%2Fupload", value, loc)
			}
			if n := text(t, ".notice"); !strings.Contains(n, "session has ended") {
				t.Errorf("notice = %q; want it to say the session ended", n)
			}
		}
		screenshot(t, "10-session-ended")
	})

	t.Run("readable on a phone", func(t *testing.T) {
		do(t, "sign in again", chromedp.Navigate(p.url+"/login"), chromedp.SendKeys(chromedp.ID("key"), key))
		click(t, "form[action='/login'] button[type=submit]")
		do(t, "phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
		for i, page := range []string{"/", "/api-keys", "/upload"} {
			name := map[string]string{"/": "dashboard", "/api-keys": "api-keys", "/upload": "upload"}[page]
			do(t, "open "+page, chromedp.Navigate(p.url+page))
			// Nothing but tables may be wider than the screen.
			wide, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
			if err != nil {
				t.Fatal(err)
			}
			if wide {
				t.Errorf("%s scrolls sideways on a 390 px wide screen", page)
			}
			screenshot(t, fmt.Sprintf("%02d-phone-%s", 11+i, name))
		}
	})

	t.Run("sign out", func(t *testing.T) {
		do(t, "open /", chromedp.Navigate(p.url+"/"))
		click(t, "form[action='/logout'] button")
		if loc := location(t); loc != "/login?signed_out=1" {
			t.Errorf("after signing out the browser is at %q; want /login?signed_out=1", loc)
		}
		do(t, "open /", chromedp.Navigate(p.url+"/"))
		if loc := location(t); loc != "/login" {
			t.Errorf("after signing out / lands on %q; want /login", loc)
		}
	})
}

// expiredLookingToken is a well-formed HS256 JWT signed with another
// secret and long expired.
const expiredLookingToken = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." +
	"eyJpc3MiOiJ3YXNtd2l6Iiwic3ViIjoiMDE5MmQ0ZTAtMDAwMC03MDAwLTgwMDAtMDAwMDAwMDAwMDAwIiwiZXhwIjoxNjAwMDAwMDAwfQ." +
	"c2lnbmF0dXJlLW9mLWFub3RoZXItc2VjcmV0LXh4eHh4eHh4eHg"

func ptr[T any](v T) *T { return &v }
