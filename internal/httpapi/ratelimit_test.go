package httpapi

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/ratelimit"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
	"github.com/wasmwiz/wasmwiz/testdata"
)

// readSpy is a request body that records whether anything read it.
type readSpy struct {
	r    io.Reader
	read atomic.Bool
}

func (s *readSpy) Read(p []byte) (int, error) {
	s.read.Store(true)
	return s.r.Read(p)
}

// TestExecuteLimits pins how POST /api/wasm/execute counts against the
// rate and the quota, now that it counts itself (one Redis round trip for
// a JSON request) instead of the middleware.
func TestExecuteLimits(t *testing.T) {
	env := map[string]string{"RATE_LIMIT_FREE": "10", "DAILY_QUOTA_FREE": "2"}
	for k, v := range productionEnv {
		env[k] = v
	}
	var sent atomic.Int64
	a := newTestAPI(t, env, executorFunc(func(context.Context, protocol.Request) (protocol.Reply, error) {
		sent.Add(1)
		return protocol.Reply{Status: "ok", Worker: "fake"}, nil
	}))
	// A limiter on a prefix the test knows, so that a second Limiter can
	// stand for another replica sharing the same Redis.
	prefix := testenv.Prefix(t)
	newLimiter := func() *ratelimit.Limiter {
		ropts, err := redis.ParseURL(testenv.RedisURL)
		if err != nil {
			t.Fatal(err)
		}
		rdb := redis.NewClient(ropts)
		t.Cleanup(func() { rdb.Close() })
		l := ratelimit.New(rdb, nil, prometheus.NewRegistry(), ratelimit.Config{Prefix: prefix})
		t.Cleanup(func() { l.Close() }) // before rdb.Close: cleanups run in reverse
		return l
	}
	a.srv.limiter = newLimiter()
	otherReplica := newLimiter()

	admin := a.bootstrap(t, "ops", auth.RoleAdmin, "pro")
	up := a.do(t, "POST", "/api/wasm/upload?name=h", "application/wasm", bytes.NewReader(testdata.Module("hello.wasm")), bearer(admin)...)
	var hello moduleJSON
	up.json(t, &hello)
	up = a.do(t, "POST", "/api/wasm/upload?name=n", "application/wasm", bytes.NewReader(testdata.Module("no_start.wasm")), bearer(admin)...)
	var noStart moduleJSON
	up.json(t, &noStart)

	// Admins, so that they may run ops's modules; the tier is free.
	freeKey := func(t *testing.T, owner string) (secret, keyID string) {
		t.Helper()
		k, secret, err := a.srv.keys.Bootstrap(context.Background(),
			auth.NewKeyRequest{Name: owner, Owner: owner, Role: auth.RoleAdmin, Tier: "free"})
		if err != nil {
			t.Fatal(err)
		}
		return secret, k.ID.String()
	}
	valid := `{"module_id":"` + hello.ID + `"}`
	execute := func(t *testing.T, key, body string) response {
		t.Helper()
		return a.do(t, "POST", "/api/wasm/execute", "application/json", strings.NewReader(body), bearer(key)...)
	}
	check := func(t *testing.T, name string, r response, status int, code string, remaining int) {
		t.Helper()
		if r.status != status || (code != "" && r.errorCode(t) != code) {
			t.Fatalf("%s = %d %s; want %d %s", name, r.status, r.body, status, code)
		}
		if got := r.header.Get("X-RateLimit-Remaining"); got != strconv.Itoa(remaining) || r.header.Get("X-RateLimit-Limit") != "10" ||
			r.header.Get("X-RateLimit-Reset") == "" {
			t.Fatalf("%s: X-RateLimit-Limit %q, Remaining %q, Reset %q; want 10, %d and a reset", name,
				r.header.Get("X-RateLimit-Limit"), got, r.header.Get("X-RateLimit-Reset"), remaining)
		}
		if status == http.StatusTooManyRequests {
			if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
				t.Fatalf("%s: Retry-After %q; want whole seconds >= 1", name, r.header.Get("Retry-After"))
			}
		}
	}
	// quotaLeft is what is left of the quota of 2 today: AllowExecution
	// with a quota of 3 counts one more and leaves 3-(count+1) = 2-count.
	quotaLeft := func(t *testing.T, keyID string) int {
		t.Helper()
		d, err := otherReplica.AllowExecution(context.Background(), keyID, 3)
		if err != nil {
			t.Fatal(err)
		}
		return d.Remaining
	}

	t.Run("counted once", func(t *testing.T) {
		key, _ := freeKey(t, "once")
		before := sent.Load()
		check(t, "execute 1", execute(t, key, valid), 200, "", 9)
		check(t, "execute 2", execute(t, key, valid), 200, "", 8)
		if n := sent.Load() - before; n != 2 {
			t.Errorf("%d executions sent; want 2", n)
		}
	})

	t.Run("invalid requests count against the rate, not the quota", func(t *testing.T) {
		key, _ := freeKey(t, "invalid")
		check(t, "bad JSON", execute(t, key, `{"module_id":`), 400, "invalid_json", 9)
		check(t, "unknown module", execute(t, key, `{"module_id":"0192f5e4-0000-7000-8000-000000000000"}`), 404, "module_not_found", 8)
		check(t, "no _start", execute(t, key, `{"module_id":"`+noStart.ID+`"}`), 400, "invalid_module", 7)
		check(t, "execute 1", execute(t, key, valid), 200, "", 6)
		check(t, "execute 2", execute(t, key, valid), 200, "", 5)
		// Refused by the quota, still counted against the rate.
		check(t, "over the quota", execute(t, key, valid), 429, "quota_exceeded", 4)
		check(t, "invalid over the quota", execute(t, key, `{"module_id":`), 400, "invalid_json", 3)
	})

	t.Run("over the rate: not counted against the quota", func(t *testing.T) {
		key, keyID := freeKey(t, "rate")
		before := sent.Load()
		// Another replica spends the bucket: this one learns it only from
		// Redis, after reading the body.
		for range 10 {
			if _, err := otherReplica.Allow(context.Background(), keyID, 10); err != nil {
				t.Fatal(err)
			}
		}
		check(t, "valid, over the rate", execute(t, key, valid), 429, "rate_limited", 0)
		check(t, "invalid, over the rate", execute(t, key, `{"module_id":`), 429, "rate_limited", 0)
		key2, keyID2 := freeKey(t, "rate2")
		for range 10 {
			otherReplica.Allow(context.Background(), keyID2, 10)
		}
		check(t, "invalid, over the rate, unknown here", execute(t, key2, `{"module_id":`), 429, "rate_limited", 0)
		if n := sent.Load() - before; n != 0 {
			t.Errorf("%d executions sent over the rate; want 0", n)
		}
		if left := quotaLeft(t, keyID); left != 2 {
			t.Errorf("quota left after requests refused by the rate = %d; want 2, none counted", left)
		}
	})

	// A key this replica already knows to be over its rate is refused
	// before its body is read, as the middleware did; so is a multipart
	// request, whose body may carry a module to validate and store.
	t.Run("known over the rate: body not read", func(t *testing.T) {
		key, _ := freeKey(t, "known")
		for range 10 {
			a.do(t, "GET", "/api/wasm/modules", "", nil, bearer(key)...)
		}
		ct, form := multipartBody(t, "file", testdata.Module("hello.wasm"))
		for _, c := range []struct {
			name, contentType string
			body              io.Reader
		}{
			{"json", "application/json", strings.NewReader(valid)},
			{"multipart", ct, form},
		} {
			spy := &readSpy{r: c.body}
			req := httptest.NewRequest("POST", "/api/wasm/execute", spy)
			req.Header.Set("Content-Type", c.contentType)
			req.Header.Set("Authorization", "Bearer "+key)
			rec := httptest.NewRecorder()
			a.srv.ServeHTTP(rec, req)
			r := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
			check(t, c.name+" over the rate", r, 429, "rate_limited", 0)
			if spy.read.Load() {
				t.Errorf("%s over the rate: the body was read; want refused before", c.name)
			}
		}
	})

	t.Run("multipart counted once", func(t *testing.T) {
		key, keyID := freeKey(t, "form")
		ct, form := multipartBody(t, "module_id", hello.ID)
		check(t, "multipart execute", a.do(t, "POST", "/api/wasm/execute", ct, form, bearer(key)...), 200, "", 9)
		ct, form = multipartBody(t, "module_id", noStart.ID)
		check(t, "multipart without _start", a.do(t, "POST", "/api/wasm/execute", ct, form, bearer(key)...), 400, "invalid_module", 8)
		if left := quotaLeft(t, keyID); left != 1 {
			t.Errorf("quota left after one valid and one invalid multipart execute = %d; want 1", left)
		}
	})
}
