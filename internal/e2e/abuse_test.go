package e2e_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/testdata"
)

// TestRequestAbuse sends the api what a hostile or broken client sends:
// every answer is the contract's error shape with a 4xx status, never a
// 5xx, and the api goes on serving.
func TestRequestAbuse(t *testing.T) {
	p := startPlatform(t, 1, nil)
	hello := p.upload("hello", testdata.Module("hello"))
	echo := p.upload("echo", testdata.Module("echo"))
	argsEnv := p.upload("args_env", testdata.Module("args_env"))
	alive := func(t *testing.T, after string) {
		t.Helper()
		if r, res := p.execute(map[string]any{"module_id": hello}); r.status != 200 || res.Status != "ok" {
			t.Fatalf("Run(hello) after %s = %d %s; want 200 ok", after, r.status, short(r.body))
		}
	}

	t.Run("oversized bodies", func(t *testing.T) {
		big := func(n int) []byte { return bytes.Repeat([]byte("a"), n) }
		ct, form := multipartForm(t, "file", big(10<<20+1))
		tests := []struct {
			name, method, path, contentType string
			body                            func() io.Reader
			status                          int
			code                            string
		}{
			{"upload over MAX_WASM_SIZE", "POST", "/api/wasm/upload?name=big", "application/wasm",
				func() io.Reader { return bytes.NewReader(big(10<<20 + 1)) }, 413, "module_too_large"},
			{"upload over MAX_WASM_SIZE, chunked", "POST", "/api/wasm/upload?name=big", "application/wasm",
				func() io.Reader { return io.MultiReader(bytes.NewReader(big(10<<20 + 1))) }, 413, "module_too_large"},
			{"multipart upload over MAX_WASM_SIZE", "POST", "/api/wasm/upload", ct,
				func() io.Reader { return bytes.NewReader(form.Bytes()) }, 413, "module_too_large"},
			{"execute body over its limit", "POST", "/api/wasm/execute", "application/json",
				func() io.Reader { return strings.NewReader(`{"input":"` + strings.Repeat("a", 8<<20) + `"}`) }, 413, "input_too_large"},
			{"execute input one byte over MAX_INPUT_SIZE", "POST", "/api/wasm/execute", "application/json",
				func() io.Reader {
					return strings.NewReader(`{"module_id":"` + echo + `","input":"` + strings.Repeat("a", 1<<20+1) + `"}`)
				}, 413, "input_too_large"},
			{"key creation body of 1 MiB", "POST", "/api/auth/keys", "application/json",
				func() io.Reader { return strings.NewReader(`{"name":"` + strings.Repeat("a", 1<<20) + `"}`) }, 413, "request_too_large"},
			{"token body of 1 MiB", "POST", "/api/auth/token", "application/json",
				func() io.Reader { return strings.NewReader(`{"x":"` + strings.Repeat("a", 1<<20) + `"}`) }, 413, "request_too_large"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r, err := try(p.url, tt.method, tt.path, tt.contentType, tt.body())
				if err != nil {
					t.Fatalf("%s %s: %v; want a %d answer, not a broken connection", tt.method, tt.path, err, tt.status)
				}
				if r.status != tt.status || errorCode(r) != tt.code {
					t.Errorf("%s %s = %d %s; want %d %s", tt.method, tt.path, r.status, short(r.body), tt.status, tt.code)
				}
			})
		}
		alive(t, "oversized bodies")
	})

	t.Run("oversized headers", func(t *testing.T) {
		tests := []struct {
			name   string
			mutate func(*http.Request)
			want   func(int) bool
			desc   string
		}{
			{"one 100 KiB header", func(r *http.Request) { r.Header.Set("X-Big", strings.Repeat("h", 100<<10)) },
				func(s int) bool { return s == 431 }, "431"},
			{"1000 headers of 100 bytes", func(r *http.Request) {
				for i := range 1000 {
					r.Header.Set(fmt.Sprintf("X-H%d", i), strings.Repeat("h", 100))
				}
			}, func(s int) bool { return s == 431 }, "431"},
			{"a 100 KiB URL", func(r *http.Request) { r.URL.RawQuery = "cursor=" + strings.Repeat("c", 100<<10) },
				func(s int) bool { return s == 431 || s == 414 }, "431 or 414"},
			{"a 60 KiB header (under the limit)", func(r *http.Request) { r.Header.Set("X-Big", strings.Repeat("h", 60<<10)) },
				func(s int) bool { return s == 200 }, "200"},
			{"a 10 KiB X-Request-ID", func(r *http.Request) { r.Header.Set("X-Request-ID", strings.Repeat("r", 10<<10)) },
				func(s int) bool { return s == 200 }, "200"},
			{"a 60 KiB API key", func(r *http.Request) { r.Header.Set("X-API-Key", "wwz_"+strings.Repeat("k", 60<<10)) },
				func(s int) bool { return s == 401 }, "401"},
			{"a 60 KiB bearer token", func(r *http.Request) {
				r.Header.Set("Authorization", "Bearer "+strings.Repeat("a", 20<<10)+"."+strings.Repeat("b", 20<<10)+"."+strings.Repeat("c", 20<<10))
			}, func(s int) bool { return s == 401 }, "401"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				req, _ := http.NewRequest("GET", p.url+"/api/wasm/modules?limit=1", nil)
				tt.mutate(req)
				r, err := send(req)
				if err != nil {
					t.Fatalf("GET: %v", err)
				}
				if !tt.want(r.status) {
					t.Errorf("GET with %s = %d %s; want %s", tt.name, r.status, short(r.body), tt.desc)
				}
				if id := r.header.Get("X-Request-ID"); r.status != 431 && (id == "" || len(id) > 128) {
					t.Errorf("X-Request-ID = %q; want one the server made", short([]byte(id)))
				}
			})
		}
		alive(t, "oversized headers")
	})

	t.Run("slow clients do not hold up others", func(t *testing.T) {
		port := strings.TrimPrefix(p.url, "http://127.0.0.1:")
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		partial := []string{
			"POST /api/wasm/execute HTTP/1.1\r\nHost: x\r\n",                                                                       // headers never end
			"POST /api/wasm/upload?name=slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/wasm\r\n",                            // same, upload
			"POST /api/wasm/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"mod", // body never ends
			"G", // request line never ends
		}
		for i := range 40 {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			conns = append(conns, c)
			if _, err := c.Write([]byte(partial[i%len(partial)])); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		}
		for i := range 10 {
			alive(t, fmt.Sprintf("%d stalled connections (%d)", len(conns), i))
		}
		// One byte every 50 ms: a slowloris that keeps its connection busy.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
			if err != nil {
				return
			}
			defer c.Close()
			line := "GET /health/live HTTP/1.1\r\nX-Slow: " + strings.Repeat("s", 1000)
			for i := 0; i < len(line); i++ {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if _, err := c.Write([]byte{line[i]}); err != nil {
					return
				}
			}
		})
		for i := range 10 {
			alive(t, fmt.Sprintf("a slowloris (%d)", i))
		}
		close(stop)
		wg.Wait()
	})

	t.Run("malformed HTTP", func(t *testing.T) {
		port := strings.TrimPrefix(p.url, "http://127.0.0.1:")
		wasmHead := "\x00asm\x01\x00\x00\x00"
		tests := []struct{ name, raw string }{
			// A client that half-closes once its request is sent: net/http
			// cancels the request's context, as when a client gives up.
			{"a client that leaves after its upload", "POST /api/wasm/upload?name=x HTTP/1.1\r\nHost: x\r\nContent-Type: application/wasm\r\nContent-Length: 8\r\n\r\n" + wasmHead},
			{"a client that leaves during an execution", "POST /api/wasm/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
				fmt.Sprint(len(`{"module_id":"`+hello+`"}`)) + "\r\n\r\n" + `{"module_id":"` + hello + `"}`},
			{"body shorter than Content-Length", "POST /api/wasm/upload?name=x HTTP/1.1\r\nHost: x\r\nContent-Type: application/wasm\r\nContent-Length: 1000\r\n\r\n" + wasmHead},
			{"Content-Length and chunked", "POST /api/wasm/upload?name=x HTTP/1.1\r\nHost: x\r\nContent-Type: application/wasm\r\nContent-Length: 8\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n" + wasmHead + "\r\n0\r\n\r\n"},
			{"two Content-Lengths", "POST /api/wasm/upload?name=x HTTP/1.1\r\nHost: x\r\nContent-Type: application/wasm\r\nContent-Length: 8\r\nContent-Length: 9\r\n\r\n" + wasmHead},
			{"a chunk size of 2^64-1", "POST /api/wasm/upload?name=x HTTP/1.1\r\nHost: x\r\nContent-Type: application/wasm\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n" + wasmHead},
			{"a bad chunk size", "POST /api/wasm/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"},
			{"a negative Content-Length", "POST /api/wasm/execute HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"},
			{"no Host", "GET /health/live HTTP/1.1\r\n\r\n"},
			{"HTTP/0.9", "GET /health/live\r\n\r\n"},
			{"a 1000-byte method", strings.Repeat("M", 1000) + " /health/live HTTP/1.1\r\nHost: x\r\n\r\n"},
			{"a NUL in the path", "GET /api/wasm/modules/\x00 HTTP/1.1\r\nHost: x\r\n\r\n"},
			{"a dot-dot path", "GET /api/../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"},
			{"an encoded dot-dot id", "GET /api/wasm/modules/%2e%2e%2f%2e%2e HTTP/1.1\r\nHost: x\r\n\r\n"},
			{"a header without a colon", "GET /health/live HTTP/1.1\r\nHost: x\r\nBroken header\r\n\r\n"},
			{"a folded header", "GET /health/live HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"},
			{"gzip that is not gzip", "POST /api/wasm/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.Write([]byte(tt.raw))
				c.(*net.TCPConn).CloseWrite()
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				b, _ := io.ReadAll(c)
				status := ""
				if line, _, ok := strings.Cut(string(b), "\r\n"); ok {
					status = line
				}
				// net/http's own refusals are plain text; everything that
				// reaches the api is the contract's JSON. Neither is a 5xx.
				if strings.HasPrefix(status, "HTTP/1.1 5") || strings.HasPrefix(status, "HTTP/1.0 5") {
					t.Errorf("%s: %s; want no 5xx", tt.name, short(b))
				}
			})
		}
		alive(t, "malformed HTTP")
	})

	t.Run("malformed multipart", func(t *testing.T) {
		const b = "XyZzY"
		part := func(headers, body string) string { return "--" + b + "\r\n" + headers + "\r\n\r\n" + body + "\r\n" }
		end := "--" + b + "--\r\n"
		wasm := string(testdata.Module("hello"))
		tests := []struct {
			name, path, contentType, body string
		}{
			{"no boundary", "/api/wasm/upload", "multipart/form-data", part(`Content-Disposition: form-data; name="file"; filename="a.wasm"`, wasm) + end},
			{"empty boundary", "/api/wasm/upload", `multipart/form-data; boundary=""`, "--\r\n\r\n"},
			{"another boundary", "/api/wasm/upload", "multipart/form-data; boundary=other", part(`Content-Disposition: form-data; name="file"`, wasm) + end},
			{"no closing boundary", "/api/wasm/upload", "multipart/form-data; boundary=" + b, part(`Content-Disposition: form-data; name="file"`, wasm)},
			{"empty body", "/api/wasm/upload", "multipart/form-data; boundary=" + b, ""},
			{"only the closing boundary", "/api/wasm/upload", "multipart/form-data; boundary=" + b, end},
			{"part without a name", "/api/wasm/upload", "multipart/form-data; boundary=" + b, part(`Content-Disposition: form-data`, wasm) + end},
			{"part without headers", "/api/wasm/upload", "multipart/form-data; boundary=" + b, "--" + b + "\r\n\r\n" + wasm + "\r\n" + end},
			{"unknown field", "/api/wasm/upload", "multipart/form-data; boundary=" + b, part(`Content-Disposition: form-data; name="evil"`, "x") + end},
			{"file twice", "/api/wasm/upload", "multipart/form-data; boundary=" + b,
				part(`Content-Disposition: form-data; name="file"`, wasm) + part(`Content-Disposition: form-data; name="file"`, wasm) + end},
			{"file and wasm", "/api/wasm/upload", "multipart/form-data; boundary=" + b,
				part(`Content-Disposition: form-data; name="file"`, wasm) + part(`Content-Disposition: form-data; name="wasm"`, wasm) + end},
			{"name only", "/api/wasm/upload", "multipart/form-data; boundary=" + b, part(`Content-Disposition: form-data; name="name"`, "x") + end},
			{"name over 1 KiB", "/api/wasm/upload", "multipart/form-data; boundary=" + b,
				part(`Content-Disposition: form-data; name="name"`, strings.Repeat("n", 2000)) + part(`Content-Disposition: form-data; name="file"`, wasm) + end},
			{"20000 tiny parts", "/api/wasm/upload", "multipart/form-data; boundary=" + b,
				strings.Repeat(part(`Content-Disposition: form-data; name="name"`, "x"), 20000) + end},
			{"garbage", "/api/wasm/upload", "multipart/form-data; boundary=" + b, "\x00\xff\r\n--\r\n--" + b + "\x00"},
			{"execute: no boundary", "/api/wasm/execute", "multipart/form-data", part(`Content-Disposition: form-data; name="module_id"`, hello) + end},
			{"execute: truncated", "/api/wasm/execute", "multipart/form-data; boundary=" + b, part(`Content-Disposition: form-data; name="module_id"`, hello)[:40]},
			{"execute: module_id twice", "/api/wasm/execute", "multipart/form-data; boundary=" + b,
				part(`Content-Disposition: form-data; name="module_id"`, hello) + part(`Content-Disposition: form-data; name="module_id"`, hello) + end},
			{"execute: module_id and file", "/api/wasm/execute", "multipart/form-data; boundary=" + b,
				part(`Content-Disposition: form-data; name="module_id"`, hello) + part(`Content-Disposition: form-data; name="file"`, wasm) + end},
			{"execute: timeout_ms not a number", "/api/wasm/execute", "multipart/form-data; boundary=" + b,
				part(`Content-Disposition: form-data; name="module_id"`, hello) + part(`Content-Disposition: form-data; name="timeout_ms"`, "1e3; DROP") + end},
			{"execute: module_id of 2 KiB", "/api/wasm/execute", "multipart/form-data; boundary=" + b,
				part(`Content-Disposition: form-data; name="module_id"`, strings.Repeat("0", 2048)) + end},
			{"execute: nested multipart", "/api/wasm/execute", "multipart/form-data; boundary=" + b,
				part("Content-Disposition: form-data; name=\"file\"\r\nContent-Type: multipart/mixed; boundary=inner",
					"--inner\r\n\r\n"+wasm+"\r\n--inner--") + end},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r, err := try(p.url, "POST", tt.path, tt.contentType, strings.NewReader(tt.body))
				if err != nil {
					t.Fatalf("POST %s: %v", tt.path, err)
				}
				if (r.status != 400 && r.status != 413) || errorCode(r) == "" {
					t.Errorf("POST %s (%s) = %d %s; want 400 or 413 in the error shape", tt.path, tt.name, r.status, short(r.body))
				}
			})
		}
		// Part headers are bounded by mime/multipart (10 MiB in all) and by
		// the body's limit; a large one is odd, not wrong.
		r, err := try(p.url, "POST", "/api/wasm/upload", "multipart/form-data; boundary="+b,
			strings.NewReader(part(`Content-Disposition: form-data; name="file"`+"\r\nX-Junk: "+strings.Repeat("j", 1<<20), wasm)+end))
		if err != nil || r.status != 201 {
			t.Errorf("upload with a 1 MiB part header = %v %d %s; want 201", err, r.status, short(r.body))
		}
		alive(t, "malformed multipart")
	})

	t.Run("JSON depth bombs and odd JSON", func(t *testing.T) {
		const deep = 100_000
		tests := []struct{ name, path, body string }{
			{"execute: 100k nested arrays", "/api/wasm/execute", strings.Repeat("[", deep) + strings.Repeat("]", deep)},
			{"execute: 100k nested arrays in args", "/api/wasm/execute", `{"module_id":"` + hello + `","args":` + strings.Repeat("[", deep) + strings.Repeat("]", deep) + `}`},
			{"execute: 100k nested objects in env", "/api/wasm/execute", `{"module_id":"` + hello + `","env":` + strings.Repeat(`{"a":`, deep) + "1" + strings.Repeat("}", deep) + `}`},
			{"execute: 100k open arrays, never closed", "/api/wasm/execute", strings.Repeat("[", deep)},
			{"keys: 5000 nested objects", "/api/auth/keys", strings.Repeat(`{"name":`, 5000) + `"x"` + strings.Repeat("}", 5000)},
			{"keys: 20000 nested arrays", "/api/auth/keys", strings.Repeat("[", 20000) + strings.Repeat("]", 20000)},
			{"token: 20000 nested arrays", "/api/auth/token", strings.Repeat("[", 20000) + strings.Repeat("]", 20000)},
			{"execute: a 1e999999 timeout", "/api/wasm/execute", `{"module_id":"` + hello + `","timeout_ms":1e999999}`},
			{"execute: a 100k-digit timeout", "/api/wasm/execute", `{"module_id":"` + hello + `","timeout_ms":` + strings.Repeat("9", 100_000) + `}`},
			{"execute: negative memory", "/api/wasm/execute", `{"module_id":"` + hello + `","memory_limit_bytes":-1}`},
			{"execute: 500k args", "/api/wasm/execute", `{"module_id":"` + hello + `","args":[` + strings.Repeat(`"",`, 500_000) + `""]}`},
			{"execute: 100k env entries", "/api/wasm/execute", `{"module_id":"` + hello + `","env":{` + envEntries(100_000) + `}}`},
			{"execute: duplicate keys", "/api/wasm/execute", `{"module_id":"` + hello + `","module_id":"x"}`},
			{"execute: two values", "/api/wasm/execute", `{"module_id":"` + hello + `"}{"module_id":"` + hello + `"}`},
			{"execute: null", "/api/wasm/execute", `null`},
			{"execute: a string", "/api/wasm/execute", `"` + hello + `"`},
			{"execute: input and input_base64", "/api/wasm/execute", `{"module_id":"` + hello + `","input":"a","input_base64":"YQ=="}`},
			{"execute: bad base64", "/api/wasm/execute", `{"module_id":"` + hello + `","input_base64":"!!!!"}`},
			{"execute: NUL in an arg", "/api/wasm/execute", `{"module_id":"` + hello + `","args":["a\u0000b"]}`},
			{"execute: '=' in an env name", "/api/wasm/execute", `{"module_id":"` + hello + `","env":{"A=B":"c"}}`},
			{"execute: empty env name", "/api/wasm/execute", `{"module_id":"` + hello + `","env":{"":"c"}}`},
			{"execute: a 1 MiB arg", "/api/wasm/execute", `{"module_id":"` + hello + `","args":["` + strings.Repeat("a", 1<<20) + `"]}`},
			{"execute: a 1 MiB env value", "/api/wasm/execute", `{"module_id":"` + hello + `","env":{"BIG":"` + strings.Repeat("a", 1<<20) + `"}}`},
			{"execute: 257 args", "/api/wasm/execute", `{"module_id":"` + hello + `","args":[` + strings.Repeat(`"a",`, 256) + `"a"]}`},
			{"execute: 257 env entries", "/api/wasm/execute", `{"module_id":"` + hello + `","env":{` + envEntries(257) + `}}`},
			{"execute: args and env over 64 KiB together", "/api/wasm/execute", `{"module_id":"` + hello + `","args":[` +
				strings.Repeat(`"`+strings.Repeat("a", 4000)+`",`, 16) + `"a"],"env":{"E":"` + strings.Repeat("e", 4000) + `"}}`},
			{"execute: an unknown field of 1 MiB", "/api/wasm/execute", `{"` + strings.Repeat("f", 1<<20) + `":1}`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r, err := try(p.url, "POST", tt.path, "application/json", strings.NewReader(tt.body))
				if err != nil {
					t.Fatalf("POST %s: %v", tt.path, err)
				}
				if r.status != 400 || (errorCode(r) != "invalid_json" && errorCode(r) != "invalid_request") {
					t.Errorf("POST %s (%s) = %d %s; want 400 invalid_json or invalid_request", tt.path, tt.name, r.status, short(r.body))
				}
				if len(r.body) > 4096 {
					t.Errorf("POST %s (%s) answered %d bytes; want a short error that does not echo the request", tt.path, tt.name, len(r.body))
				}
			})
		}
		alive(t, "JSON bombs")
	})

	t.Run("arguments at and past the limits", func(t *testing.T) {
		args256 := make([]string, 256)
		for i := range args256 {
			args256[i] = fmt.Sprintf("arg-%03d-✓", i)
		}
		env256 := map[string]string{}
		for i := range 256 {
			env256[fmt.Sprintf("VAR_%03d", i)] = "välue"
		}
		unicode := []string{"héllo", "日本語", "🦀🚀", "\u202eRTL", "e\u0301", "\u00a0nbsp", "line\nbreak", "tab\there", "\ufeffBOM", "\U0010ffff"}
		wide := make([]string, 16) // 16 × 4000 bytes: args and env close to their 64 KiB total
		for i := range wide {
			wide[i] = strings.Repeat(string(rune('a'+i)), 4000)
		}
		tests := []struct {
			name string
			args []string
			env  map[string]string
		}{
			{"256 args", args256, nil},
			{"256 env entries", nil, env256},
			{"unicode args and env", unicode, map[string]string{"ÜNICODE": "日本語🦀", "EMPTY": ""}},
			{"args near 64 KiB in all", wide, map[string]string{"E": strings.Repeat("e", 1000)}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r, res := p.execute(map[string]any{"module_id": argsEnv, "args": tt.args, "env": tt.env})
				if r.status != 200 || res.Status != "ok" {
					t.Fatalf("Run(args_env) = %d %s; want 200 ok", r.status, short(r.body))
				}
				want := "args_env\n"
				for _, a := range tt.args {
					want += a + "\n"
				}
				keys := make([]string, 0, len(tt.env))
				for k := range tt.env {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				for _, k := range keys {
					want += k + "=" + tt.env[k] + "\n"
				}
				if got := deref(res.Stdout); got != want {
					t.Errorf("stdout = %q; want argv and environ back exactly (%d bytes)", short([]byte(got)), len(want))
				}
			})
		}
	})

	t.Run("invalid UTF-8", func(t *testing.T) {
		// Go's JSON decoder turns invalid UTF-8 in strings into U+FFFD: what
		// reaches the guest and the database is valid UTF-8.
		r, err := try(p.url, "POST", "/api/wasm/execute", "application/json",
			strings.NewReader("{\"module_id\":\""+echo+"\",\"input\":\"a\xff\xfeb\xc0\xaf\xed\xa0\x80\"}"))
		if err != nil || r.status != 200 {
			t.Fatalf("execute with invalid UTF-8 input = %v %d %s; want 200", err, r.status, short(r.body))
		}
		if stdout, _ := outputs(t, r); !utf8.ValidString(stdout) || !strings.Contains(stdout, "\ufffd") {
			t.Errorf("stdout = %q; want the input with U+FFFD for each invalid byte", stdout)
		}
		r, _ = try(p.url, "POST", "/api/wasm/execute", "application/json",
			strings.NewReader("{\"module_id\":\""+argsEnv+"\",\"args\":[\"\xff\"],\"env\":{\"K\xfe\":\"\xc3\"}}"))
		if r.status != 200 || !utf8.Valid(r.body) {
			t.Errorf("execute with invalid UTF-8 args and env = %d %s; want 200 with valid UTF-8", r.status, short(r.body))
		}
		tests := []struct{ name, method, path, contentType, body string }{
			{"module name in the query", "POST", "/api/wasm/upload?name=%ff%fe", "application/wasm", string(testdata.Module("hello"))},
			{"module name in a form", "POST", "/api/wasm/upload", "", "name\x00\xff\xfe"},
			{"module file name in a form", "POST", "/api/wasm/upload", "", "filename\x00\xff\xfe.wasm"},
			{"key owner", "POST", "/api/auth/keys", "application/json", "{\"name\":\"n\",\"owner\":\"\xff\"}"},
			{"key tier", "POST", "/api/auth/keys", "application/json", "{\"name\":\"n\",\"tier\":\"pro\xff\"}"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ct, body := tt.contentType, io.Reader(strings.NewReader(tt.body))
				if ct == "" { // a form: the field name, NUL, then its value
					field, value, _ := strings.Cut(tt.body, "\x00")
					var buf bytes.Buffer
					w := multipart.NewWriter(&buf)
					if field == "filename" {
						fw, _ := w.CreateFormFile("file", value)
						fw.Write(testdata.Module("hello"))
					} else {
						w.WriteField(field, value)
						fw, _ := w.CreateFormFile("file", "ok.wasm")
						fw.Write(testdata.Module("hello"))
					}
					w.Close()
					ct, body = w.FormDataContentType(), &buf
				}
				r, err := try(p.url, tt.method, tt.path, ct, body)
				if err != nil {
					t.Fatalf("%s %s: %v", tt.method, tt.path, err)
				}
				if r.status != 400 || !utf8.Valid(r.body) {
					t.Errorf("%s %s with invalid UTF-8 in the %s = %d %q; want 400 in valid UTF-8", tt.method, tt.path, tt.name, r.status, short(r.body))
				}
			})
		}
	})

	t.Run("path traversal in names", func(t *testing.T) {
		marker := "/tmp/wwz-traversal-" + hex.EncodeToString(randomBytes(6))
		tests := []struct {
			name     string
			query    string // ?name= when set
			filename string // the multipart file's name otherwise
			want     string
		}{
			{"query name climbing to /tmp", "../../../../../.." + marker, "", "../../../../../.." + marker},
			{"query name of ..", "..", "", ".."},
			{"query name with backslashes", `..\..\windows\system32`, "", `..\..\windows\system32`},
			{"query name with a URL", "file:///etc/passwd", "", "file:///etc/passwd"},
			{"file name climbing", "", "../../../../../.." + marker, marker[strings.LastIndex(marker, "/")+1:]},
			{"file name of ..", "", "..", "module.wasm"},
			{"file name, Windows style", "", `C:\Windows\..\evil.wasm`, "evil.wasm"},
			{"file name, absolute", "", "/etc/passwd", "passwd"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var r response
				if tt.query != "" {
					r = p.do("POST", "/api/wasm/upload?name="+url.QueryEscape(tt.query), "application/wasm", bytes.NewReader(testdata.Module("args_env")))
				} else {
					var buf bytes.Buffer
					w := multipart.NewWriter(&buf)
					fw, _ := w.CreateFormFile("file", tt.filename)
					fw.Write(testdata.Module("args_env"))
					w.Close()
					r = p.do("POST", "/api/wasm/upload", w.FormDataContentType(), &buf)
				}
				var m struct{ ID, Name string }
				jsonDecode(r.body, &m)
				if r.status != 201 || m.Name != tt.want {
					t.Fatalf("upload = %d %s; want 201 named %q", r.status, short(r.body), tt.want)
				}
				// The name is a label: it comes back as given and is argv[0].
				g := p.do("GET", "/api/wasm/modules/"+m.ID, "", nil)
				if !strings.Contains(string(g.body), jsonString(tt.want)) {
					t.Errorf("GET module = %s; want the name %q back", short(g.body), tt.want)
				}
				_, res := p.execute(map[string]any{"module_id": m.ID})
				if deref(res.Stdout) != tt.want+"\n" {
					t.Errorf("argv[0] = %q; want the name %q", deref(res.Stdout), tt.want)
				}
			})
		}
		if _, err := os.Stat(marker); !os.IsNotExist(err) {
			t.Errorf("%s exists (%v): a module name reached the filesystem", marker, err)
		}
	})

	t.Run("SQL metacharacters in every string field", func(t *testing.T) {
		payloads := []string{
			`'; DROP TABLE modules; --`,
			`' OR '1'='1`,
			`" OR ""="`,
			`'); DELETE FROM api_keys; --`,
			`\'; TRUNCATE module_blobs; --`,
			`%' OR name LIKE '%`,
			`$1 $$ $body$ $$`,
			`\N`,
			`E'\x27'`,
			`1; SELECT pg_sleep(10)`,
			`admin'--`,
		}
		for i, sql := range payloads {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				// Module name: stored and returned verbatim.
				r := p.do("POST", "/api/wasm/upload?name="+url.QueryEscape(sql), "application/wasm", bytes.NewReader(testdata.Module("args_env")))
				var m struct{ ID, Name string }
				jsonDecode(r.body, &m)
				if r.status != 201 || m.Name != sql {
					t.Fatalf("upload named %q = %d %s; want 201 with the name kept", sql, r.status, short(r.body))
				}
				// Args, env names and values, input: reach the guest verbatim.
				name := "K" + strings.ReplaceAll(sql, "=", "") // '=' ends an environment name
				r2, res := p.execute(map[string]any{"module_id": m.ID, "args": []string{sql, sql + "\t\n"}, "env": map[string]string{name: sql}, "input": sql})
				want := sql + "\n" + sql + "\n" + sql + "\t\n\n" + name + "=" + sql + "\n"
				if r2.status != 200 || deref(res.Stdout) != want {
					t.Errorf("Run(args_env) with %q = %d %q; want %q", sql, r2.status, deref(res.Stdout), want)
				}
				// Key name: stored verbatim; owner, role and tier: refused.
				r = p.do("POST", "/api/auth/keys", "application/json", strings.NewReader(`{"name":`+jsonString(sql)+`,"owner":"sqltest"}`))
				if r.status != 201 || !strings.Contains(string(r.body), `"name":`+jsonString(sql)) {
					t.Errorf("create key named %q = %d %s; want 201 with the name kept", sql, r.status, short(r.body))
				}
				for _, field := range []string{"owner", "role", "tier"} {
					r = p.do("POST", "/api/auth/keys", "application/json", strings.NewReader(`{"name":"n","`+field+`":`+jsonString(sql)+`}`))
					if r.status != 400 || errorCode(r) != "invalid_request" {
						t.Errorf("create key with %s %q = %d %s; want 400 invalid_request", field, sql, r.status, short(r.body))
					}
				}
				// Ids, cursors, limits, dates and filters: refused or matched as values.
				esc := url.PathEscape(sql)
				q := url.QueryEscape(sql)
				for _, c := range []struct {
					method, path string
					ok           []int
				}{
					{"GET", "/api/wasm/modules/" + esc, []int{400, 404}},
					{"DELETE", "/api/wasm/modules/" + esc, []int{400, 404}},
					{"DELETE", "/api/auth/keys/" + esc, []int{400, 404}},
					{"GET", "/api/wasm/modules?cursor=" + q, []int{400}},
					{"GET", "/api/wasm/modules?limit=" + q, []int{400}},
					{"GET", "/api/auth/keys?cursor=" + q, []int{400}},
					{"GET", "/api/usage?since=" + q, []int{400}},
					{"GET", "/api/usage?owner=" + q, []int{200, 400}},
					{"GET", "/api/audit?owner=" + q + "&action=" + q, []int{200, 400}},
					{"GET", "/api/audit?cursor=" + q, []int{400}},
				} {
					r := p.do(c.method, c.path, "", nil)
					if !slices.Contains(c.ok, r.status) {
						t.Errorf("%s %s = %d %s; want one of %v", c.method, c.path, r.status, short(r.body), c.ok)
					}
				}
				r, _ = p.execute(map[string]any{"module_id": sql})
				if r.status != 400 {
					t.Errorf("execute module_id %q = %d; want 400", sql, r.status)
				}
				for _, h := range [][2]string{{"X-API-Key", sql}, {"Authorization", "Bearer " + sql}, {"Authorization", sql}} {
					r = p.do("GET", "/api/wasm/modules", "", nil, h[0], h[1])
					if r.status != 401 {
						t.Errorf("GET with %s %q = %d; want 401", h[0], h[1], r.status)
					}
				}
				r = p.do("GET", "/health/live", "", nil, "X-Request-ID", sql)
				if r.header.Get("X-Request-ID") == sql {
					t.Errorf("X-Request-ID %q was kept; want it replaced", sql)
				}
			})
		}
		// The tables are all still there, with what was written.
		db, err := store.Open(context.Background(), p.env["DATABASE_URL"])
		if err != nil {
			t.Fatalf("open store: %v", err)
		}
		defer db.Close()
		mods, err := db.ListModules(context.Background(), store.AllOwners(), uuid.Nil, 1000)
		if err != nil || len(mods) < len(payloads) {
			t.Errorf("ListModules = %d modules, %v; want every upload there", len(mods), err)
		}
		keys, err := db.ListKeys(context.Background(), store.Owner("sqltest"), uuid.Nil, 1000)
		if err != nil || len(keys) != len(payloads) {
			t.Errorf("ListKeys(sqltest) = %d keys, %v; want %d", len(keys), err, len(payloads))
		}
		alive(t, "SQL metacharacters")
	})

	if p.api.exited() {
		t.Fatalf("api exited:\n%s", tail(p.api.out.String(), 30))
	}
	if strings.Contains(p.api.out.String(), `"level":"ERROR"`) {
		t.Errorf("the api logged errors during the abuse (a 5xx or worse):\n%s", grepLines(p.api.out.String(), `"level":"ERROR"`, 10))
	}
}

// TestListingsAtScale pages through 10,000 modules and 10,000 keys of one
// owner, inserted through the store, 100 at a time over HTTP: every row
// once, newest first, and the last page says so.
func TestListingsAtScale(t *testing.T) {
	const n = 10_000
	p := startPlatform(t, 0, nil)
	key := p.createKey("bulk", "user", "pro")
	p.upload("someone-elses", testdata.Module("hello")) // owner dev: must not show

	// The key the test authenticates with is one of the owner's keys too.
	var self struct {
		Keys []struct{ ID string } `json:"keys"`
	}
	jsonDecode(p.do("GET", "/api/auth/keys", "", nil, "X-API-Key", key).body, &self)
	if len(self.Keys) != 1 {
		t.Fatalf("GET /api/auth/keys as the new key shows %d keys; want itself", len(self.Keys))
	}

	// COPY, in one transaction: through the store's one-row inserts, each
	// its own transaction, 20,000 rows take 10 to 30 s on a busy CI machine.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, p.env["DATABASE_URL"])
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	began := time.Now()
	blob := testdata.Module("hello")
	sha := sha256Hex(blob)
	wantModules := make(map[string]bool, n)
	wantKeys := make(map[string]bool, n+1)
	modRows := make([][]any, 0, n)
	keyRows := make([][]any, 0, n)
	for i := range n {
		now := time.Now().UTC()
		mid, kid := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
		modRows = append(modRows, []any{mid, "bulk", fmt.Sprintf("bulk-%05d", i), sha, int64(len(blob)), []string{"_start"}, true, now})
		keyRows = append(keyRows, []any{kid, fmt.Sprintf("bulk-%05d", i), "wwz_bulk", randomBytes(32), "bulk", "user", "free", now})
		wantModules[mid.String()], wantKeys[kid.String()] = true, true
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO module_blobs (sha256, bytes, size_bytes) VALUES ($1, $2, $3)
			ON CONFLICT (sha256) DO NOTHING`, sha, blob, len(blob)); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"modules"},
			[]string{"id", "owner", "name", "sha256", "size_bytes", "exports", "wasi", "created_at"}, pgx.CopyFromRows(modRows)); err != nil {
			return err
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"api_keys"},
			[]string{"id", "name", "prefix", "key_hash", "owner", "role", "tier", "created_at"}, pgx.CopyFromRows(keyRows))
		return err
	})
	if err != nil {
		t.Fatalf("insert %d modules and keys: %v", n, err)
	}
	t.Logf("inserted %d modules and %d keys in %v", n, n, time.Since(began))

	wantKeys[self.Keys[0].ID] = true

	for _, tt := range []struct {
		name, path, field string
		want              map[string]bool
	}{
		{"modules", "/api/wasm/modules", "modules", wantModules},
		{"keys", "/api/auth/keys", "keys", wantKeys},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[string]bool{}
			var last string
			pages, cursor := 0, ""
			var slowest, total time.Duration
			for {
				path := tt.path + "?limit=100"
				if cursor != "" {
					path += "&cursor=" + url.QueryEscape(cursor)
				}
				began := time.Now()
				r := p.do("GET", path, "", nil, "X-API-Key", key)
				took := time.Since(began)
				total += took
				slowest = max(slowest, took)
				if r.status != 200 {
					t.Fatalf("GET %s = %d %s", path, r.status, short(r.body))
				}
				var page map[string]any
				jsonDecode(r.body, &page)
				items, _ := page[tt.field].([]any)
				pages++
				if len(items) > 100 {
					t.Fatalf("page %d holds %d items; want at most 100", pages, len(items))
				}
				for _, it := range items {
					id, _ := it.(map[string]any)["id"].(string)
					if seen[id] {
						t.Fatalf("page %d repeats %s", pages, id)
					}
					if !tt.want[id] {
						t.Fatalf("page %d shows %s, which is not the owner's", pages, id)
					}
					if last != "" && id >= last {
						t.Fatalf("page %d: %s after %s; want newest first", pages, id, last)
					}
					seen[id], last = true, id
				}
				next, _ := page["next_cursor"].(string)
				if next == "" {
					break
				}
				if pages > len(tt.want)/100+2 {
					t.Fatalf("%d pages and still a next_cursor", pages)
				}
				cursor = next
			}
			if len(seen) != len(tt.want) {
				t.Errorf("paged through %d %s; want %d", len(seen), tt.name, len(tt.want))
			}
			t.Logf("%d %s in %d pages: %v in all, slowest page %v", len(seen), tt.name, pages, total, slowest)
		})
	}
}

// try sends a request and reports a broken connection as an error rather
// than failing the test, for cases where that is the finding.
func try(base, method, path, contentType string, body io.Reader) (response, error) {
	req, err := http.NewRequest(method, base+path, body)
	if err != nil {
		return response{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return send(req)
}

func send(req *http.Request) (response, error) {
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: res.StatusCode, header: res.Header, body: b}, nil
}

func envEntries(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"K%d":"v"`, i)
	}
	return b.String()
}

// jsonString is s as the api's JSON encoder writes it.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func grepLines(s, substr string, n int) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[:n]
	}
	return strings.Join(out, "\n")
}
