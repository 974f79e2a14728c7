package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/testdata"
)

var productionEnv = map[string]string{
	"ENVIRONMENT": "production", "API_SALT": "test-salt-0123456789", "JWT_SECRET": strings.Repeat("j", 32),
}

func bearer(secret string) []string { return []string{"Authorization", "Bearer " + secret} }

func (a *testAPI) bootstrap(t *testing.T, owner, role, tier string) string {
	t.Helper()
	_, secret, err := a.srv.keys.Bootstrap(context.Background(), auth.NewKeyRequest{Name: owner + "-" + role, Owner: owner, Role: role, Tier: tier})
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

func (a *testAPI) createKey(t *testing.T, by string, body string) (response, keyJSON) {
	t.Helper()
	r := a.do(t, "POST", "/api/auth/keys", "application/json", strings.NewReader(body), bearer(by)...)
	var k keyJSON
	if r.status == 201 {
		r.json(t, &k)
	}
	return r, k
}

func TestUnauthenticated(t *testing.T) {
	a := newTestAPI(t, productionEnv, nil)
	cases := map[string][]string{
		"none":          nil,
		"basic":         {"Authorization", "Basic YTpi"},
		"unknown":       {"Authorization", "Token wwz_" + strings.Repeat("a", 40)},
		"empty bearer":  {"Authorization", "Bearer "},
		"wrong format":  {"Authorization", "Bearer wwz_short"},
		"unknown key":   {"Authorization", "Bearer " + auth.NewKey()},
		"bad x-api-key": {"X-API-Key", "nope"},
		"garbage jwt":   {"Authorization", "Bearer eyJ.eyJ.sig"},
		"huge header":   {"Authorization", "Bearer wwz_" + strings.Repeat("A", 50000)},
		"non-ascii":     {"Authorization", "Bearer wwz_ünïcødé-ünïcødé-ünïcødé-ünïcødé"},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			r := a.do(t, "GET", "/api/wasm/modules", "", nil, h...)
			if r.status != 401 || r.errorCode(t) != "unauthorized" || r.header.Get("WWW-Authenticate") != "Bearer" {
				t.Errorf("= %d %s (WWW-Authenticate %q); want 401 unauthorized with WWW-Authenticate: Bearer",
					r.status, r.body, r.header.Get("WWW-Authenticate"))
			}
			if strings.Contains(string(r.body), "revoked") || strings.Contains(string(r.body), "malformed") {
				t.Errorf("401 body tells why: %s", r.body)
			}
		})
	}
	// Health stays open.
	if r := a.do(t, "GET", "/health/live", "", nil); r.status != 200 {
		t.Errorf("/health/live without credentials = %d", r.status)
	}
}

func TestKeyManagementAndTenancy(t *testing.T) {
	a := newTestAPI(t, productionEnv, nil)
	admin := a.bootstrap(t, "ops", auth.RoleAdmin, "pro")

	r, alice := a.createKey(t, admin, `{"name":"alice main","owner":"alice","tier":"basic"}`)
	if r.status != 201 || alice.Key == "" || alice.Owner != "alice" || alice.Role != "user" || alice.Tier != "basic" ||
		!strings.HasPrefix(alice.Key, alice.Prefix) || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("admin creates alice's key = %d %s", r.status, r.body)
	}
	_, bob := a.createKey(t, admin, `{"name":"bob","owner":"bob","tier":"free"}`)

	refused := []struct{ name, body, code string }{
		{"other owner", `{"name":"x","owner":"bob"}`, "forbidden"},
		{"admin role", `{"name":"x","role":"admin"}`, "forbidden"},
		{"higher tier", `{"name":"x","tier":"pro"}`, "forbidden"},
		{"no name", `{}`, "invalid_request"},
		{"unknown field", `{"name":"x","colour":"red"}`, "invalid_request"},
		{"bad tier", `{"name":"x","tier":"gold"}`, "invalid_request"},
	}
	for _, tt := range refused {
		t.Run("alice "+tt.name, func(t *testing.T) {
			r, _ := a.createKey(t, alice.Key, tt.body)
			want := 403
			if tt.code == "invalid_request" {
				want = 400
			}
			if r.status != want || r.errorCode(t) != tt.code {
				t.Errorf("= %d %s; want %d %s", r.status, r.body, want, tt.code)
			}
		})
	}
	r, aliceFree := a.createKey(t, alice.Key, `{"name":"alice ci","tier":"free","expires_in_days":30}`)
	if r.status != 201 || aliceFree.Owner != "alice" || aliceFree.Tier != "free" || aliceFree.ExpiresAt == nil {
		t.Errorf("alice creates a lower-tier key = %d %s", r.status, r.body)
	}

	t.Run("list shows no secrets and only the owner's keys", func(t *testing.T) {
		r := a.do(t, "GET", "/api/auth/keys", "", nil, bearer(alice.Key)...)
		var list keyListJSON
		r.json(t, &list)
		if r.status != 200 || len(list.Keys) != 2 {
			t.Fatalf("alice lists keys = %d %s; want her 2", r.status, r.body)
		}
		for _, k := range list.Keys {
			if k.Owner != "alice" || k.Key != "" {
				t.Errorf("listed key %+v", k)
			}
		}
		if bytes.Contains(r.body, []byte(alice.Key)) || bytes.Contains(r.body, []byte(`"key"`)) {
			t.Errorf("key list holds a secret: %s", r.body)
		}
		r = a.do(t, "GET", "/api/auth/keys", "", nil, bearer(admin)...)
		r.json(t, &list)
		if len(list.Keys) != 4 {
			t.Errorf("admin lists %d keys; want all 4", len(list.Keys))
		}
	})

	t.Run("module tenancy", func(t *testing.T) {
		up := a.do(t, "POST", "/api/wasm/upload?name=alices", "application/wasm",
			bytes.NewReader(testdata.Module("hello.wasm")), bearer(alice.Key)...)
		var m moduleJSON
		up.json(t, &m)
		if up.status != 201 || m.Owner != "alice" {
			t.Fatalf("alice uploads = %d %s", up.status, up.body)
		}
		for _, c := range []struct{ method, path, body string }{
			{"GET", "/api/wasm/modules/" + m.ID, ""},
			{"DELETE", "/api/wasm/modules/" + m.ID, ""},
			{"POST", "/api/wasm/execute", `{"module_id":"` + m.ID + `"}`},
		} {
			var body *strings.Reader
			ct := ""
			if c.body != "" {
				body, ct = strings.NewReader(c.body), "application/json"
			} else {
				body = strings.NewReader("")
			}
			r := a.do(t, c.method, c.path, ct, body, bearer(bob.Key)...)
			if r.status != 404 || r.errorCode(t) != "module_not_found" {
				t.Errorf("bob %s %s = %d %s; want 404 module_not_found", c.method, c.path, r.status, r.body)
			}
		}
		var list moduleListJSON
		a.do(t, "GET", "/api/wasm/modules", "", nil, bearer(bob.Key)...).json(t, &list)
		if len(list.Modules) != 0 {
			t.Errorf("bob lists %d modules; want none of alice's", len(list.Modules))
		}
		if r := a.do(t, "GET", "/api/wasm/modules/"+m.ID, "", nil, bearer(admin)...); r.status != 200 {
			t.Errorf("admin gets alice's module = %d", r.status)
		}
		if r := a.do(t, "GET", "/api/wasm/modules/"+m.ID, "", nil, bearer(aliceFree.Key)...); r.status != 200 {
			t.Errorf("alice's other key gets her module = %d", r.status)
		}
	})

	t.Run("tokens", func(t *testing.T) {
		r := a.do(t, "POST", "/api/auth/token", "", nil, bearer(alice.Key)...)
		var tok tokenJSON
		r.json(t, &tok)
		if r.status != 200 || tok.TokenType != "Bearer" || tok.Token == "" || tok.ExpiresAt.IsZero() {
			t.Fatalf("token = %d %s", r.status, r.body)
		}
		if r := a.do(t, "GET", "/api/wasm/modules", "", nil, bearer(tok.Token)...); r.status != 200 {
			t.Errorf("modules with the token = %d %s", r.status, r.body)
		}
		if r := a.do(t, "POST", "/api/auth/token", "", nil, bearer(tok.Token)...); r.status != 401 {
			t.Errorf("token from a token = %d; want 401", r.status)
		}
		if r := a.do(t, "POST", "/api/auth/refresh", "", nil, bearer(alice.Key)...); r.status != 401 {
			t.Errorf("refresh with a key = %d; want 401", r.status)
		}
		r = a.do(t, "POST", "/api/auth/refresh", "", nil, bearer(tok.Token)...)
		var fresh tokenJSON
		r.json(t, &fresh)
		if r.status != 200 || fresh.Token == "" || fresh.Token == tok.Token {
			t.Errorf("refresh = %d %s; want a new token", r.status, r.body)
		}

		// Revoking the key refuses the key and its tokens.
		if r := a.do(t, "DELETE", "/api/auth/keys/"+alice.ID, "", nil, bearer(alice.Key)...); r.status != 204 {
			t.Fatalf("alice revokes her key = %d %s", r.status, r.body)
		}
		for _, cred := range []string{alice.Key, tok.Token, fresh.Token} {
			if r := a.do(t, "GET", "/api/wasm/modules", "", nil, bearer(cred)...); r.status != 401 {
				t.Errorf("revoked credential = %d; want 401", r.status)
			}
		}
		var k keyJSON
		keys := a.do(t, "GET", "/api/auth/keys?limit=100", "", nil, bearer(admin)...)
		var list keyListJSON
		keys.json(t, &list)
		for _, kk := range list.Keys {
			if kk.ID == alice.ID {
				k = kk
			}
		}
		if k.RevokedAt == nil {
			t.Errorf("revoked key listed without revoked_at: %+v", k)
		}
	})

	t.Run("revoke another owner's key", func(t *testing.T) {
		r := a.do(t, "DELETE", "/api/auth/keys/"+bob.ID, "", nil, bearer(aliceFree.Key)...)
		if r.status != 404 || r.errorCode(t) != "key_not_found" {
			t.Errorf("alice revokes bob's key = %d %s; want 404 key_not_found", r.status, r.body)
		}
		if r := a.do(t, "DELETE", "/api/auth/keys/nope", "", nil, bearer(admin)...); r.status != 400 {
			t.Errorf("revoke bad id = %d; want 400", r.status)
		}
	})
}

func TestKeyJSONShape(t *testing.T) {
	a := newTestAPI(t, productionEnv, nil)
	admin := a.bootstrap(t, "ops", auth.RoleAdmin, "pro")
	r, _ := a.createKey(t, admin, `{"name":"shape"}`)
	var raw map[string]any
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"id", "name", "prefix", "owner", "role", "tier", "created_at", "expires_at", "last_used_at", "revoked_at", "key"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("key object lacks %q: %s", f, r.body)
		}
	}
}

func TestRateLimits(t *testing.T) {
	env := map[string]string{"DAILY_QUOTA_FREE": "2"}
	for k, v := range productionEnv {
		env[k] = v
	}
	a := newTestAPI(t, env, executorFunc(func(context.Context, protocol.Request) (protocol.Reply, error) {
		return protocol.Reply{Status: "ok", Worker: "fake"}, nil
	}))
	admin := a.bootstrap(t, "ops", auth.RoleAdmin, "pro")
	free := a.bootstrap(t, "tiny", auth.RoleUser, "free")
	up := a.do(t, "POST", "/api/wasm/upload?name=h", "application/wasm", bytes.NewReader(testdata.Module("hello.wasm")), bearer(admin)...)
	var m moduleJSON
	up.json(t, &m)

	t.Run("daily quota", func(t *testing.T) {
		q := a.bootstrap(t, "quota", auth.RoleAdmin, "free")
		codes := []int{}
		for range 3 {
			r := a.do(t, "POST", "/api/wasm/execute", "application/json", strings.NewReader(`{"module_id":"`+m.ID+`"}`), bearer(q)...)
			codes = append(codes, r.status)
			if r.status == 429 {
				if r.errorCode(t) != "quota_exceeded" || r.header.Get("Retry-After") == "" {
					t.Errorf("over quota = %s (Retry-After %q); want quota_exceeded with Retry-After", r.body, r.header.Get("Retry-After"))
				}
			}
		}
		if codes[0] != 200 || codes[1] != 200 || codes[2] != 429 {
			t.Errorf("executions with a daily quota of 2 = %v; want [200 200 429]", codes)
		}
	})

	t.Run("free tier: 10 a minute", func(t *testing.T) {
		for i := 1; i <= 11; i++ {
			r := a.do(t, "GET", "/api/wasm/modules", "", nil, bearer(free)...)
			if r.header.Get("X-RateLimit-Limit") != "10" || r.header.Get("X-RateLimit-Reset") == "" {
				t.Errorf("request %d headers: limit %q reset %q", i, r.header.Get("X-RateLimit-Limit"), r.header.Get("X-RateLimit-Reset"))
			}
			if i <= 10 {
				if r.status != 200 || r.header.Get("X-RateLimit-Remaining") != strconv.Itoa(10-i) {
					t.Errorf("request %d = %d remaining %q; want 200 and %d", i, r.status, r.header.Get("X-RateLimit-Remaining"), 10-i)
				}
				continue
			}
			if r.status != 429 || r.errorCode(t) != "rate_limited" {
				t.Fatalf("request 11 = %d %s; want 429 rate_limited", r.status, r.body)
			}
			if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
				t.Errorf("Retry-After = %q; want whole seconds >= 1", r.header.Get("Retry-After"))
			}
		}
	})
}
