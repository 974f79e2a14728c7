package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/telemetry"
	"github.com/wasmwiz/wasmwiz/internal/usage"
)

type auditDetail struct {
	Reason    string `json:"reason"`
	KeyPrefix string `json:"key_prefix"`
	KeyOwner  string `json:"key_owner"`
	Repeats   int    `json:"repeats"`
}

func (e auditEventJSON) detail(t *testing.T) auditDetail {
	t.Helper()
	var d auditDetail
	if err := json.Unmarshal(e.Detail, &d); err != nil {
		t.Fatalf("detail %s: %v", e.Detail, err)
	}
	return d
}

// auditPages reads every page of /api/audit with the query, returning the
// events and the raw bodies.
func (a *testAPI) auditPages(t *testing.T, key, query string) ([]auditEventJSON, string) {
	t.Helper()
	var all []auditEventJSON
	var raw strings.Builder
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatalf("more than 100 pages")
		}
		sep := "?"
		if query != "" {
			sep = "&"
		}
		path := "/api/audit" + query
		if cursor != "" {
			path += sep + "cursor=" + cursor
		}
		r := a.do(t, "GET", path, "", nil, bearer(key)...)
		if r.status != 200 {
			t.Fatalf("GET %s = %d %s", path, r.status, r.body)
		}
		raw.Write(r.body)
		var page auditListJSON
		r.json(t, &page)
		all = append(all, page.Events...)
		if page.NextCursor == nil {
			return all, raw.String()
		}
		cursor = *page.NextCursor
	}
}

func TestAuditLog(t *testing.T) {
	env := map[string]string{"DAILY_QUOTA_FREE": "1"}
	for k, v := range productionEnv {
		env[k] = v
	}
	a := newTestAPI(t, env, executorFunc(func(context.Context, protocol.Request) (protocol.Reply, error) {
		return protocol.Reply{Status: "ok", Worker: "fake"}, nil
	}))
	rec := a.withRecorders(t)
	admin := a.bootstrap(t, "ops", auth.RoleAdmin, "pro")
	secrets := []string{admin}

	// key.created, success and denied.
	r, alice := a.createKey(t, admin, `{"name":"alice","owner":"alice","tier":"basic"}`)
	if r.status != 201 {
		t.Fatalf("create alice's key = %d %s", r.status, r.body)
	}
	secrets = append(secrets, alice.Key)
	if r, _ := a.createKey(t, alice.Key, `{"name":"sneaky","role":"admin"}`); r.status != 403 {
		t.Fatalf("alice creates an admin key = %d; want 403", r.status)
	}
	_, alice2 := a.createKey(t, alice.Key, `{"name":"second"}`)
	secrets = append(secrets, alice2.Key)

	// token.issued, token.refused.
	r = a.do(t, "POST", "/api/auth/token", "", nil, bearer(alice.Key)...)
	var tok tokenJSON
	r.json(t, &tok)
	secrets = append(secrets, tok.Token)
	if r := a.do(t, "POST", "/api/auth/refresh", "", nil, bearer(alice.Key)...); r.status != 401 {
		t.Fatalf("refresh with a key = %d; want 401", r.status)
	}
	if r := a.do(t, "POST", "/api/auth/refresh", "", nil, bearer(tok.Token+"x")...); r.status != 401 {
		t.Fatalf("refresh with a bad token = %d; want 401", r.status)
	}

	// module.uploaded, module.deleted.
	m := a.uploadAs(t, alice.Key, "audited")
	if r := a.do(t, "DELETE", "/api/wasm/modules/"+m.ID, "", nil, bearer(alice.Key)...); r.status != 204 {
		t.Fatalf("delete = %d", r.status)
	}

	// key.revoked, then auth.refused for it and for other credentials.
	if r := a.do(t, "DELETE", "/api/auth/keys/"+alice2.ID, "", nil, bearer(admin)...); r.status != 204 {
		t.Fatalf("revoke = %d", r.status)
	}
	unknown := auth.NewKey()
	secrets = append(secrets, unknown)
	for _, h := range [][]string{bearer(alice2.Key), bearer(unknown), nil, bearer("wwz_short-and-wrong")} {
		if r := a.do(t, "GET", "/api/wasm/modules", "", nil, h...); r.status != 401 {
			t.Fatalf("refused credential = %d; want 401", r.status)
		}
	}

	// ratelimit.limited: a free key's 11th request in a minute.
	tiny := a.bootstrap(t, "tiny", auth.RoleUser, "free")
	secrets = append(secrets, tiny)
	for range 11 {
		a.do(t, "GET", "/api/wasm/modules", "", nil, bearer(tiny)...)
	}
	// quota.exceeded: a free key's second execution of the day.
	quota := a.bootstrap(t, "quota", auth.RoleUser, "free")
	secrets = append(secrets, quota)
	qm := a.uploadAs(t, quota, "q")
	a.executeAs(t, quota, qm.ID, "")
	if r := a.executeAs(t, quota, qm.ID, ""); r.status != 429 {
		t.Fatalf("second execution = %d; want 429", r.status)
	}
	rec.flush(t)

	events, raw := a.auditPages(t, admin, "?limit=3")

	t.Run("events", func(t *testing.T) {
		find := func(action, outcome string, match func(e auditEventJSON) bool) auditEventJSON {
			t.Helper()
			for _, e := range events {
				if e.Action == action && e.Outcome == outcome && (match == nil || match(e)) {
					return e
				}
			}
			t.Fatalf("no %s %s event among %d", action, outcome, len(events))
			return auditEventJSON{}
		}
		is := func(s *string, want string) bool { return s != nil && *s == want }
		e := find(usage.ActionKeyCreated, usage.OutcomeSuccess, func(e auditEventJSON) bool { return is(e.TargetID, alice.ID) })
		if !is(e.Owner, "ops") || e.KeyID == nil || e.detail(t).KeyOwner != "alice" || e.RequestID == nil || e.ClientIP == nil {
			t.Errorf("key.created = %+v; want by ops, for alice, with a request id and client address", e)
		}
		e = find(usage.ActionKeyCreated, usage.OutcomeDenied, nil)
		if !is(e.KeyID, alice.ID) || !strings.Contains(e.detail(t).Reason, "admin") {
			t.Errorf("denied key.created = %+v (%s); want by alice's key with the rule", e, e.Detail)
		}
		find(usage.ActionTokenIssued, usage.OutcomeSuccess, func(e auditEventJSON) bool { return is(e.TargetID, alice.ID) })
		find(usage.ActionTokenRefused, usage.OutcomeDenied, func(e auditEventJSON) bool { return e.detail(t).Reason == "wrong_credential" })
		find(usage.ActionTokenRefused, usage.OutcomeDenied, func(e auditEventJSON) bool { return e.detail(t).Reason == "invalid_token" })
		find(usage.ActionModuleUploaded, usage.OutcomeSuccess, func(e auditEventJSON) bool { return is(e.TargetID, m.ID) })
		find(usage.ActionModuleDeleted, usage.OutcomeSuccess, func(e auditEventJSON) bool { return is(e.TargetID, m.ID) })
		find(usage.ActionKeyRevoked, usage.OutcomeSuccess, func(e auditEventJSON) bool { return is(e.TargetID, alice2.ID) })
		e = find(usage.ActionAuthRefused, usage.OutcomeDenied, func(e auditEventJSON) bool { return e.detail(t).Reason == "revoked" })
		if e.detail(t).KeyPrefix != alice2.Prefix || e.KeyID != nil {
			t.Errorf("refused revoked key = %s; want its display prefix %q and no key id", e.Detail, alice2.Prefix)
		}
		find(usage.ActionAuthRefused, usage.OutcomeDenied, func(e auditEventJSON) bool { return e.detail(t).Reason == "unknown" })
		find(usage.ActionAuthRefused, usage.OutcomeDenied, func(e auditEventJSON) bool { return e.detail(t).Reason == "missing" })
		e = find(usage.ActionAuthRefused, usage.OutcomeDenied, func(e auditEventJSON) bool { return e.detail(t).Reason == "malformed" })
		if e.detail(t).KeyPrefix != "" {
			t.Errorf("malformed credential recorded with a prefix: %s", e.Detail)
		}
		find(usage.ActionRateLimitLimited, usage.OutcomeDenied, func(e auditEventJSON) bool { return is(e.Owner, "tiny") })
		find(usage.ActionQuotaExceeded, usage.OutcomeDenied, func(e auditEventJSON) bool { return is(e.Owner, "quota") })
	})

	t.Run("newest first, each once", func(t *testing.T) {
		seen := map[string]bool{}
		for i, e := range events {
			if seen[e.ID] {
				t.Errorf("event %s twice across pages", e.ID)
			}
			seen[e.ID] = true
			if i > 0 && e.ID > events[i-1].ID {
				t.Errorf("event %d (%s) newer than event %d", i, e.ID, i-1)
			}
		}
	})

	t.Run("filters", func(t *testing.T) {
		refused, _ := a.auditPages(t, admin, "?action=auth.refused")
		for _, e := range refused {
			if e.Action != usage.ActionAuthRefused {
				t.Errorf("action filter let %s through", e.Action)
			}
		}
		if len(refused) < 4 {
			t.Errorf("auth.refused events = %d; want at least 4", len(refused))
		}
		mine, _ := a.auditPages(t, admin, "?owner=alice")
		for _, e := range mine {
			if e.Owner == nil || *e.Owner != "alice" {
				t.Errorf("owner filter let %v through", e.Owner)
			}
		}
		if len(mine) < 5 {
			t.Errorf("alice's events = %d; want at least 5", len(mine))
		}
		none, _ := a.auditPages(t, admin, "?until=2000-01-01T00:00:00Z")
		if len(none) != 0 {
			t.Errorf("events before 2000 = %d; want 0", len(none))
		}
	})

	t.Run("admin only, checked parameters", func(t *testing.T) {
		tests := []struct {
			name, key, query string
			status           int
			code             string
		}{
			{"a user key", alice.Key, "", 403, "forbidden"},
			{"unknown action", admin, "?action=key.stolen", 400, "invalid_request"},
			{"bad cursor", admin, "?cursor=@@", 400, "invalid_request"},
			{"bad limit", admin, "?limit=0", 400, "invalid_request"},
			{"bad since", admin, "?since=now", 400, "invalid_request"},
			{"until before since", admin, "?since=2025-01-02T00:00:00Z&until=2025-01-01T00:00:00Z", 400, "invalid_request"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := a.do(t, "GET", "/api/audit"+tt.query, "", nil, bearer(tt.key)...)
				if r.status != tt.status || r.errorCode(t) != tt.code {
					t.Errorf("GET /api/audit%s = %d %s; want %d %s", tt.query, r.status, r.body, tt.status, tt.code)
				}
			})
		}
	})

	t.Run("no secret in audit rows or logs", func(t *testing.T) {
		rec.flush(t)
		all, raw2 := a.auditPages(t, admin, "")
		if len(all) == 0 {
			t.Fatal("no events")
		}
		logs := a.logs.String() + rec.logs.String()
		if !strings.Contains(rec.logs.String(), `"msg":"audit"`) {
			t.Errorf("no audit log lines")
		}
		for _, s := range append(secrets, alice.Key[len(alice.Prefix):], tok.Token[strings.LastIndex(tok.Token, ".")+1:]) {
			for where, text := range map[string]string{"audit rows": raw + raw2, "logs": logs} {
				if strings.Contains(text, s) {
					t.Errorf("%s hold a secret (%.12s…)", where, s)
				}
			}
		}
	})
}

func TestClientIP(t *testing.T) {
	tests := []struct {
		name, remote, xff string
		ip, peer          string
	}{
		{"direct", "192.0.2.1:5555", "", "192.0.2.1", ""},
		{"behind a proxy", "10.0.0.1:5555", "198.51.100.7", "198.51.100.7", "10.0.0.1"},
		{"forwarded chain", "10.0.0.1:5555", "198.51.100.7, 10.0.0.2", "198.51.100.7", "10.0.0.1"},
		{"garbage header", "192.0.2.1:5555", "<script>", "192.0.2.1", ""},
	}
	e := echo.New()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.RemoteAddr = tt.remote
			if tt.xff != "" {
				req.Header.Set("X-Forwarded-For", tt.xff)
			}
			ip, peer := clientIP(e.NewContext(req, httptest.NewRecorder()))
			if ip != tt.ip || peer != tt.peer {
				t.Errorf("clientIP = %q, %q; want %q, %q", ip, peer, tt.ip, tt.peer)
			}
		})
	}
}

func TestAuditSignIn(t *testing.T) {
	a := newTestAPI(t, productionEnv, nil)
	rec := a.withRecorders(t)
	admin := a.bootstrap(t, "ops", auth.RoleAdmin, "pro")
	signIn := func(p auth.Principal, err error) {
		req := httptest.NewRequest(http.MethodPost, "/login", nil)
		req.RemoteAddr = "198.51.100.9:40000"
		req = req.WithContext(telemetry.WithRequestID(req.Context(), "web-req-1"))
		a.srv.AuditSignIn(req, p, err)
	}
	alice := auth.Principal{KeyID: uuid.Must(uuid.NewV7()), Owner: "alice", Role: auth.RoleUser, Tier: "free"}
	signIn(alice, nil)
	signIn(auth.Principal{}, errors.New("401 unauthorized"))
	rec.flush(t)

	events, _ := a.auditPages(t, admin, "?action=web.signin")
	outcomes := map[string]auditEventJSON{}
	for _, e := range events {
		outcomes[e.Outcome] = e
	}
	ok, refused := outcomes[usage.OutcomeSuccess], outcomes[usage.OutcomeDenied]
	if len(events) != 2 || ok.KeyID == nil || *ok.KeyID != alice.KeyID.String() || ok.Owner == nil || *ok.Owner != "alice" {
		t.Fatalf("web.signin events = %+v; want alice's success and a refusal", events)
	}
	if refused.KeyID != nil || refused.detail(t).Reason != "key_refused" {
		t.Errorf("refused sign-in = %+v (%s); want no key and reason key_refused", refused, refused.Detail)
	}
	for _, e := range events {
		if e.ClientIP == nil || *e.ClientIP != "198.51.100.9" || e.RequestID == nil || *e.RequestID != "web-req-1" {
			t.Errorf("sign-in event client %v, request %v; want 198.51.100.9 and web-req-1", e.ClientIP, e.RequestID)
		}
	}
}
