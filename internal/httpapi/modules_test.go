package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/wasmwiz/wasmwiz/testdata"
)

func TestUploadModule(t *testing.T) {
	a := newTestAPI(t, map[string]string{"MAX_WASM_SIZE": "64KiB"}, nil)
	hello := testdata.Module("hello.wasm")
	sum := sha256.Sum256(hello)

	t.Run("multipart", func(t *testing.T) {
		ct, body := multipartBody(t, "file", hello, "name", "greeter")
		r := a.do(t, "POST", "/api/wasm/upload", ct, body)
		if r.status != 201 {
			t.Fatalf("upload = %d %s; want 201", r.status, r.body)
		}
		var m moduleJSON
		r.json(t, &m)
		if m.Name != "greeter" || m.Owner != "dev" || m.SHA256 != hex.EncodeToString(sum[:]) ||
			m.SizeBytes != int64(len(hello)) || !m.WASI || !contains(m.Exports, "_start") || m.CreatedAt.IsZero() {
			t.Errorf("module = %+v", m)
		}
		if m.CreatedAt.Location().String() != "UTC" {
			t.Errorf("created_at %v not in UTC", m.CreatedAt)
		}
	})
	t.Run("wasm synonym and file name default", func(t *testing.T) {
		ct, body := multipartBody(t, "wasm", hello)
		r := a.do(t, "POST", "/api/wasm/upload", ct, body)
		var m moduleJSON
		r.json(t, &m)
		if r.status != 201 || m.Name != "wasm.wasm" {
			t.Errorf("upload with field wasm = %d %s; want 201 named after the file", r.status, r.body)
		}
	})
	t.Run("raw application/wasm", func(t *testing.T) {
		r := a.do(t, "POST", "/api/wasm/upload?name=raw-one", "application/wasm", bytes.NewReader(hello))
		var m moduleJSON
		r.json(t, &m)
		if r.status != 201 || m.Name != "raw-one" {
			t.Errorf("raw upload = %d %s", r.status, r.body)
		}
	})
	t.Run("dedup", func(t *testing.T) {
		if n, err := a.store.BlobCount(context.Background()); err != nil || n != 1 {
			t.Errorf("BlobCount after three uploads of the same bytes = %d, %v; want 1", n, err)
		}
	})

	bad := []struct {
		name        string
		contentType string
		body        io.Reader
		status      int
		code        string
		mention     string
	}{
		{"garbage", "application/wasm", bytes.NewReader(testdata.Module("garbage.wasm")), 400, "invalid_module", ""},
		{"truncated", "application/wasm", bytes.NewReader(testdata.Module("truncated.wasm")), 400, "invalid_module", ""},
		{"bad import", "application/wasm", bytes.NewReader(testdata.Module("bad_import.wasm")), 400, "invalid_module", "env.do_evil"},
		{"empty", "application/wasm", strings.NewReader(""), 400, "invalid_request", ""},
		{"too large raw", "application/wasm", bytes.NewReader(make([]byte, 65*1024)), 413, "module_too_large", ""},
		// A reader without a length: refused while reading, not by Content-Length.
		{"too large streamed", "application/wasm", io.LimitReader(zeros{}, 10<<20), 413, "module_too_large", ""},
		{"wrong type", "text/plain", strings.NewReader("x"), 415, "unsupported_media_type", ""},
		{"no type", "", strings.NewReader("x"), 415, "unsupported_media_type", ""},
		{"bad name", "application/wasm", bytes.NewReader(hello), 400, "invalid_request", "name"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			path := "/api/wasm/upload"
			if tt.name == "bad name" {
				path += "?name=" + strings.Repeat("n", 129)
			}
			r := a.do(t, "POST", path, tt.contentType, tt.body)
			if r.status != tt.status {
				t.Fatalf("upload %s = %d %s; want %d", tt.name, r.status, r.body, tt.status)
			}
			if code := r.errorCode(t); code != tt.code {
				t.Errorf("code = %q; want %q", code, tt.code)
			}
			if !strings.Contains(string(r.body), tt.mention) {
				t.Errorf("message %s; want it to mention %q", r.body, tt.mention)
			}
		})
	}

	multipartBad := []struct {
		name   string
		fields []any
		status int
		code   string
	}{
		{"missing file", []any{"name", "x"}, 400, "invalid_request"},
		{"unknown field", []any{"file", hello, "colour", "blue"}, 400, "invalid_request"},
		{"file and wasm", []any{"file", hello, "wasm", hello}, 400, "invalid_request"},
		{"too large part", []any{"file", make([]byte, 65*1024)}, 413, "module_too_large"},
	}
	for _, tt := range multipartBad {
		t.Run(tt.name, func(t *testing.T) {
			ct, body := multipartBody(t, tt.fields...)
			r := a.do(t, "POST", "/api/wasm/upload", ct, body)
			if r.status != tt.status || r.errorCode(t) != tt.code {
				t.Errorf("upload %s = %d %s; want %d %s", tt.name, r.status, r.body, tt.status, tt.code)
			}
		})
	}
	t.Run("malformed multipart", func(t *testing.T) {
		r := a.do(t, "POST", "/api/wasm/upload", "multipart/form-data; boundary=xyz", strings.NewReader("--xyz\r\ngarbage"))
		if r.status != 400 || r.errorCode(t) != "invalid_request" {
			t.Errorf("malformed multipart = %d %s; want 400 invalid_request", r.status, r.body)
		}
	})
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (a *testAPI) upload(t *testing.T, name string, wasm []byte) moduleJSON {
	t.Helper()
	r := a.do(t, "POST", "/api/wasm/upload?name="+name, "application/wasm", bytes.NewReader(wasm))
	if r.status != 201 {
		t.Fatalf("upload %s = %d %s", name, r.status, r.body)
	}
	var m moduleJSON
	r.json(t, &m)
	return m
}

func TestListGetDeleteModules(t *testing.T) {
	a := newTestAPI(t, nil, nil)
	hello := testdata.Module("hello.wasm")
	const total = 25
	ids := map[string]bool{}
	for i := range total {
		ids[a.upload(t, fmt.Sprintf("m%02d", i), hello).ID] = true
	}

	seen := map[string]bool{}
	path := "/api/wasm/modules?limit=7"
	for pages := 0; ; pages++ {
		r := a.do(t, "GET", path, "", nil)
		if r.status != 200 {
			t.Fatalf("GET %s = %d %s", path, r.status, r.body)
		}
		var list moduleListJSON
		r.json(t, &list)
		for _, m := range list.Modules {
			if seen[m.ID] || !ids[m.ID] {
				t.Fatalf("module %s repeated or unknown", m.ID)
			}
			seen[m.ID] = true
		}
		if list.NextCursor == nil {
			if pages != 3 {
				t.Errorf("pages = %d; want 4 pages of 7,7,7,4", pages+1)
			}
			break
		}
		if len(list.Modules) != 7 {
			t.Errorf("page of %d; want 7", len(list.Modules))
		}
		path = "/api/wasm/modules?limit=7&cursor=" + *list.NextCursor
	}
	if len(seen) != total {
		t.Errorf("listed %d modules; want %d", len(seen), total)
	}
	// A full last page has no next cursor.
	var exact moduleListJSON
	a.do(t, "GET", "/api/wasm/modules?limit=25", "", nil).json(t, &exact)
	if len(exact.Modules) != 25 || exact.NextCursor != nil {
		t.Errorf("limit=25 of 25: %d modules, next_cursor %v; want 25 and null", len(exact.Modules), exact.NextCursor)
	}

	var id string
	for k := range ids {
		id = k
		break
	}
	if r := a.do(t, "GET", "/api/wasm/modules/"+id, "", nil); r.status != 200 {
		t.Errorf("GET module = %d %s", r.status, r.body)
	}
	if r := a.do(t, "DELETE", "/api/wasm/modules/"+id, "", nil); r.status != 204 || len(r.body) != 0 {
		t.Errorf("DELETE module = %d %s; want 204", r.status, r.body)
	}

	errs := []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"get deleted", "GET", "/api/wasm/modules/" + id, 404, "module_not_found"},
		{"delete deleted", "DELETE", "/api/wasm/modules/" + id, 404, "module_not_found"},
		{"get unknown", "GET", "/api/wasm/modules/0192e4a0-0000-7000-8000-000000000000", 404, "module_not_found"},
		{"bad id", "GET", "/api/wasm/modules/not-a-uuid", 400, "invalid_request"},
		{"bad id delete", "DELETE", "/api/wasm/modules/1' OR '1'='1", 400, "invalid_request"},
		{"bad cursor", "GET", "/api/wasm/modules?cursor=%25%25%25", 400, "invalid_request"},
		{"garbage cursor", "GET", "/api/wasm/modules?cursor=abc", 400, "invalid_request"},
		{"limit zero", "GET", "/api/wasm/modules?limit=0", 400, "invalid_request"},
		{"limit too big", "GET", "/api/wasm/modules?limit=101", 400, "invalid_request"},
		{"limit not a number", "GET", "/api/wasm/modules?limit=ten", 400, "invalid_request"},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			path := strings.ReplaceAll(tt.path, " ", "%20")
			path = strings.ReplaceAll(path, "'", "%27")
			r := a.do(t, tt.method, path, "", nil)
			if r.status != tt.status || r.errorCode(t) != tt.code {
				t.Errorf("%s %s = %d %s; want %d %s", tt.method, tt.path, r.status, r.body, tt.status, tt.code)
			}
		})
	}
}

func TestExecuteRequestDecoding(t *testing.T) {
	a := newTestAPI(t, map[string]string{"MAX_INPUT_SIZE": "1KiB"}, nil)
	hello := a.upload(t, "hello", testdata.Module("hello.wasm"))
	tests := []struct {
		name, body string
		status     int
		code       string
		mention    string
	}{
		{"not json", `{"module_id":`, 400, "invalid_json", ""},
		{"empty", ``, 400, "invalid_json", ""},
		{"unknown field", `{"module_id":"` + hello.ID + `","bogus":1}`, 400, "invalid_request", "bogus"},
		{"wrong type", `{"module_id":42}`, 400, "invalid_request", "module_id"},
		{"array body", `[1,2]`, 400, "invalid_request", ""},
		{"two values", `{"module_id":"` + hello.ID + `"} {}`, 400, "invalid_json", ""},
		{"both inputs", `{"module_id":"` + hello.ID + `","input":"a","input_base64":"YQ=="}`, 400, "invalid_request", "input"},
		{"bad base64", `{"module_id":"` + hello.ID + `","input_base64":"!!"}`, 400, "invalid_request", "input_base64"},
		{"input too large", `{"module_id":"` + hello.ID + `","input":"` + strings.Repeat("x", 1025) + `"}`, 413, "input_too_large", ""},
		{"body far too large", `{"module_id":"` + hello.ID + `","input":"` + strings.Repeat("x", 300<<10) + `"}`, 413, "input_too_large", ""},
		{"timeout too high", `{"module_id":"` + hello.ID + `","timeout_ms":600000}`, 400, "invalid_request", "timeout_ms"},
		{"timeout zero", `{"module_id":"` + hello.ID + `","timeout_ms":0}`, 400, "invalid_request", "timeout_ms"},
		{"memory too high", `{"module_id":"` + hello.ID + `","memory_limit_bytes":9999999999}`, 400, "invalid_request", "memory_limit_bytes"},
		{"no module", `{}`, 400, "invalid_request", "module_id"},
		{"bad module id", `{"module_id":"x"}`, 400, "invalid_request", ""},
		{"unknown module", `{"module_id":"0192e4a0-0000-7000-8000-000000000000"}`, 404, "module_not_found", ""},
		{"NUL in args", `{"module_id":"` + hello.ID + `","args":["a\u0000b"]}`, 400, "invalid_request", "args"},
		{"= in env name", `{"module_id":"` + hello.ID + `","env":{"A=B":"c"}}`, 400, "invalid_request", "env"},
		{"no workers", `{"module_id":"` + hello.ID + `"}`, 503, "no_workers", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := a.do(t, "POST", "/api/wasm/execute", "application/json", strings.NewReader(tt.body))
			if r.status != tt.status {
				t.Fatalf("execute %s = %d %s; want %d", tt.name, r.status, truncate(string(r.body), 300), tt.status)
			}
			if code := r.errorCode(t); code != tt.code {
				t.Errorf("code = %q; want %q", code, tt.code)
			}
			if !strings.Contains(string(r.body), tt.mention) {
				t.Errorf("message %s; want it to mention %q", r.body, tt.mention)
			}
			if tt.code == "no_workers" && r.header.Get("Retry-After") == "" {
				t.Errorf("no_workers without Retry-After")
			}
		})
	}
	t.Run("wrong content type", func(t *testing.T) {
		r := a.do(t, "POST", "/api/wasm/execute", "text/plain", strings.NewReader(`{}`))
		if r.status != 415 {
			t.Errorf("execute text/plain = %d %s; want 415", r.status, r.body)
		}
	})
}
