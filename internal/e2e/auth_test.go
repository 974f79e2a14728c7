package e2e_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

var production = map[string]string{
	"ENVIRONMENT": "production",
	"API_SALT":    "e2e-salt-0123456789abcdef",
	"JWT_SECRET":  "e2e-jwt-secret-0123456789abcdef-0123456789",
}

func bearer(key string) []string { return []string{"Authorization", "Bearer " + key} }

// A revocation on one api replica reaches another within API.md's 5 s.
func TestRevocationAcrossReplicas(t *testing.T) {
	p := startPlatform(t, 0, production)
	second := p.addAPI()
	admin := p.createKey("ops", "admin", "pro")
	user := p.createKey("alice", "user", "basic")

	// Both replicas know (and cache) the key.
	for _, base := range []string{p.url, second} {
		if r := p.doAt(base, "GET", "/api/wasm/modules", "", nil, bearer(user)...); r.status != 200 {
			t.Fatalf("GET modules on %s = %d %s", base, r.status, short(r.body))
		}
	}
	var keys struct{ Keys []struct{ ID, Owner string } }
	r := p.do("GET", "/api/auth/keys", "", nil, bearer(admin)...)
	if err := jsonDecode(r.body, &keys); err != nil {
		t.Fatal(err)
	}
	id := ""
	for _, k := range keys.Keys {
		if k.Owner == "alice" {
			id = k.ID
		}
	}
	revoked := time.Now()
	if r := p.do("DELETE", "/api/auth/keys/"+id, "", nil, bearer(admin)...); r.status != 204 {
		t.Fatalf("revoke = %d %s", r.status, short(r.body))
	}
	testenv.Eventually(t, 5*time.Second, "the revocation to reach the second replica", func() bool {
		return p.doAt(second, "GET", "/api/wasm/modules", "", nil, bearer(user)...).status == 401
	})
	t.Logf("revocation reached the second replica after %v", time.Since(revoked).Round(time.Millisecond))
}

// Two api replicas hammering one key admit no more than its limit in total.
func TestRateLimitAcrossReplicas(t *testing.T) {
	env := map[string]string{"RATE_LIMIT_BASIC": "40"}
	for k, v := range production {
		env[k] = v
	}
	p := startPlatform(t, 0, env)
	second := p.addAPI()
	key := p.createKey("hammer", "user", "basic")

	var ok, limited, other atomic.Int64
	var wg sync.WaitGroup
	for i := range 8 {
		base := []string{p.url, second}[i%2]
		wg.Go(func() {
			for range 15 {
				switch r := p.doAt(base, "GET", "/api/wasm/modules", "", nil, bearer(key)...); r.status {
				case 200:
					ok.Add(1)
				case http.StatusTooManyRequests:
					limited.Add(1)
				default:
					other.Add(1)
				}
			}
		})
	}
	wg.Wait()
	// GCRA earns one request back every 1.5 s at 40/minute; allow for the
	// time the hammering took.
	if ok.Load() < 40 || ok.Load() > 42 || other.Load() != 0 {
		t.Errorf("120 requests over two replicas at 40/minute: %d allowed, %d limited, %d other; want 40 (±2) allowed",
			ok.Load(), limited.Load(), other.Load())
	}
}

// With Redis gone the api keeps answering, limiting locally, and /health
// says degraded; when Redis is back the limits are shared again.
func TestRedisOutage(t *testing.T) {
	redis := testenv.StartRedis(t)
	env := map[string]string{"REDIS_URL": redis.URL()}
	for k, v := range production {
		env[k] = v
	}
	p := startPlatform(t, 0, env)
	key := p.createKey("free", "user", "free") // 10 a minute

	for i := range 4 {
		if r := p.do("GET", "/api/wasm/modules", "", nil, bearer(key)...); r.status != 200 {
			t.Fatalf("request %d with Redis = %d", i+1, r.status)
		}
	}
	redis.Kill()

	codes := []int{}
	for range 8 {
		codes = append(codes, p.do("GET", "/api/wasm/modules", "", nil, bearer(key)...).status)
	}
	want := []int{200, 200, 200, 200, 200, 200, 429, 429}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Errorf("requests 5-12 without Redis = %v; want %v (local limits continue the count)", codes, want)
	}
	h := p.do("GET", "/health", "", nil)
	if h.status != 200 || !strings.Contains(string(h.body), `"status":"degraded"`) {
		t.Errorf("/health without Redis = %d %s; want 200 degraded", h.status, short(h.body))
	}
	if n := strings.Count(p.api.out.String(), "redis unreachable"); n != 1 {
		t.Errorf("outage logged %d times; want once", n)
	}

	redis.Start()
	testenv.Eventually(t, 10*time.Second, "/health ok once Redis is back", func() bool {
		h := p.do("GET", "/health", "", nil)
		return strings.Contains(string(h.body), `"redis":{"status":"ok"`)
	})
}
