package e2e_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/wasmwiz/wasmwiz/testdata"
)

// No secret ever reaches a log line: a full run through keys, tokens,
// uploads, executions, refusals and revocation, then a search of every
// process's output for each secret.
func TestNoSecretInLogs(t *testing.T) {
	p := startPlatform(t, 1, production)
	admin := p.createKey("ops", "admin", "pro")
	user := p.createKey("alice", "user", "free")

	r := p.do("POST", "/api/auth/token", "", nil, bearer(user)...)
	var tok struct{ Token string }
	if err := json.Unmarshal(r.body, &tok); err != nil || tok.Token == "" {
		t.Fatalf("token = %d %s", r.status, short(r.body))
	}
	up := p.do("POST", "/api/wasm/upload?name=h", "application/wasm", bytes.NewReader(testdata.Module("hello.wasm")), bearer(tok.Token)...)
	var m struct{ ID string }
	json.Unmarshal(up.body, &m)
	p.do("POST", "/api/wasm/execute", "application/json", strings.NewReader(`{"module_id":"`+m.ID+`"}`), bearer(user)...)
	p.do("POST", "/api/auth/refresh", "", nil, bearer(tok.Token)...)
	// Refusals log too: a wrong key, a tampered token, a key in X-API-Key.
	p.do("GET", "/api/wasm/modules", "", nil, "Authorization", "Bearer "+user[:len(user)-1]+"x")
	p.do("GET", "/api/wasm/modules", "", nil, "Authorization", "Bearer "+tok.Token+"x")
	p.do("GET", "/api/wasm/modules", "", nil, "X-API-Key", admin)
	// Exhaust the free key's minute to log rate-limit refusals.
	for range 12 {
		p.do("GET", "/api/wasm/modules", "", nil, bearer(user)...)
	}
	var keys struct{ Keys []struct{ ID, Owner string } }
	json.Unmarshal(p.do("GET", "/api/auth/keys", "", nil, bearer(admin)...).body, &keys)
	for _, k := range keys.Keys {
		if k.Owner == "alice" {
			p.do("DELETE", "/api/auth/keys/"+k.ID, "", nil, bearer(admin)...)
		}
	}
	p.do("GET", "/api/wasm/modules", "", nil, bearer(tok.Token)...)

	secrets := map[string]string{
		"admin key": admin, "user key": user, "token": tok.Token,
		"API_SALT": production["API_SALT"], "JWT_SECRET": production["JWT_SECRET"],
		// A token's signature alone would let nobody in, but it is the secret part.
		"token signature": tok.Token[strings.LastIndex(tok.Token, ".")+1:],
	}
	procs := append([]*process{p.api}, p.workers...)
	for _, proc := range procs {
		out := proc.out.String()
		if !strings.Contains(out, `"msg":"request"`) && proc == p.api {
			t.Fatalf("api output has no request lines; the search would prove nothing:\n%s", tail(out, 5))
		}
		for name, secret := range secrets {
			if strings.Contains(out, secret) {
				t.Errorf("%s's output contains the %s", proc.name, name)
			}
		}
	}
}
