package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/config"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/store"
)

// maxErrorMessage bounds what an error may say: enough for a reason, too
// little to echo a request back (or into a log line) at its full size.
const maxErrorMessage = 512

// FuzzDecodeExecuteRequest feeds hostile bodies to the JSON branch of
// readExecution (decodeJSON and every check after it). It must answer a
// 400, 413 or 415 with a short message, or an execution within the
// caller's limits that the protocol accepts as it is. Every well-formed
// module id names a module, so the store plays no part.
func FuzzDecodeExecuteRequest(f *testing.F) {
	cfg, err := config.Load(func(string) string { return "" })
	if err != nil {
		f.Fatalf("config: %v", err)
	}
	id := "0192f0c1-7a8b-7cde-8f01-23456789abcd"
	for _, seed := range []string{
		`{"module_id":"` + id + `"}`,
		`{"module_id":"` + id + `","input":"hi","args":["--flag","two words"],"env":{"K":"v"},"timeout_ms":2000,"memory_limit_bytes":67108864}`,
		`{"module_id":"` + id + `","input_base64":"/w=="}`,
		`{"module_id":"` + id + `","input":"a","input_base64":"YQ=="}`,
		`{"module_id":"` + id + `","timeout_ms":0}`,
		`{"module_id":"` + id + `","timeout_ms":1e400}`,
		`{"module_id":"` + id + `","memory_limit_bytes":-1}`,
		`{"module_id":"` + id + `","args":["a\u0000b"]}`,
		`{"module_id":"` + id + `","env":{"A=B":"c"}}`,
		`{"module_id":"` + id + `","unknown":1}`,
		`{"module_id":"not-a-uuid"}`,
		`{"module_id":"` + strings.ReplaceAll(id, "-", "") + `"}`,
		`{}`, `null`, `[]`, `"x"`, ``, `{"module_id":"` + id + `"}{}`,
		strings.Repeat("[", 20000) + strings.Repeat("]", 20000),
		"{\"module_id\":\"" + id + "\",\"input\":\"\xff\xfe\"}",
	} {
		f.Add([]byte(seed))
	}
	e := echo.New()
	principals := []auth.Principal{
		auth.Development(),
		{KeyID: uuid.New(), Owner: "alice", Role: auth.RoleUser, Tier: config.TierFree, Method: auth.MethodKey},
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s := &Server{cfg: cfg, modules: newModuleCache()}
		var peek struct {
			ModuleID string `json:"module_id"`
		}
		_ = json.NewDecoder(bytes.NewReader(body)).Decode(&peek)
		if mid, err := uuid.Parse(peek.ModuleID); err == nil {
			s.modules.entries[mid] = cachedModule{fetched: time.Now(), m: store.Module{
				ID: mid, Owner: "alice", Name: "m.wasm", SHA256: strings.Repeat("ab", 32), Exports: []string{"_start"}}}
		}
		p := principals[len(body)%len(principals)]
		req := httptest.NewRequest(http.MethodPost, "/api/wasm/execute", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		ex, err := s.readExecution(e.NewContext(req, httptest.NewRecorder()), p)
		if err != nil {
			checkClientError(t, err, http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType)
			return
		}
		tier := cfg.Tier(p.Tier)
		switch {
		case int64(len(ex.stdin)) > cfg.MaxInputSize:
			t.Fatalf("accepted %d bytes of stdin; MAX_INPUT_SIZE is %d", len(ex.stdin), cfg.MaxInputSize)
		case len(ex.args) > maxArgs || len(ex.env) > maxEnv:
			t.Fatalf("accepted %d args and %d env entries", len(ex.args), len(ex.env))
		case ex.timeout <= 0 || ex.timeout > min(tier.MaxTime, cfg.ExecutionTimeout):
			t.Fatalf("accepted a timeout of %v for tier %s", ex.timeout, p.Tier)
		case ex.memory < 64<<10 || ex.memory > min(tier.MaxMemory, cfg.MemoryLimit):
			t.Fatalf("accepted a memory limit of %d for tier %s", ex.memory, p.Tier)
		}
		preq := protocol.Request{
			ExecutionID: uuid.NewString(), ModuleID: ex.module.ID.String(), ModuleSHA256: ex.module.SHA256, ModuleName: ex.module.Name,
			Args: ex.args, Env: ex.env, Timeout: ex.timeout, MemoryLimitBytes: uint64(ex.memory), MaxOutputBytes: cfg.MaxOutputSize, Stdin: ex.stdin,
		}
		if err := preq.Validate(); err != nil {
			t.Fatalf("readExecution accepted a request the protocol refuses: %v", err)
		}
	})
}

// FuzzReadMultipart feeds hostile bodies to the multipart reader of the
// upload and execute forms: a 400 or 413, or only known fields, each
// within its limit.
func FuzzReadMultipart(f *testing.F) {
	const boundary = "fuzzboundary"
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	w.SetBoundary(boundary)
	w.WriteField("name", "hello.wasm")
	fw, _ := w.CreateFormFile("file", "../../hello.wasm")
	fw.Write([]byte("\x00asm\x01\x00\x00\x00"))
	w.Close()
	f.Add(buf.Bytes())
	part := func(name, body string) string {
		return "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + name + "\"\r\n\r\n" + body + "\r\n"
	}
	end := "--" + boundary + "--\r\n"
	for _, seed := range []string{
		"", end, part("file", "x"), part("file", "x") + end, part("name", strings.Repeat("n", 2000)) + end,
		part("file", "a") + part("file", "b") + end, part("evil", "x") + end, part("", "x") + end,
		"--" + boundary + "\r\n\r\n\r\n" + end, "--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"\r\n",
		strings.Repeat(part("x", ""), 100) + end,
	} {
		f.Add([]byte(seed))
	}
	const fileLimit = 4096
	fields := map[string]formField{
		"file": {limit: fileLimit, tooLarge: func() *Error { return newError(http.StatusRequestEntityTooLarge, "module_too_large", "too large") }},
		"name": {limit: 1024, tooLarge: func() *Error { return invalidRequest("field \"name\" is too long") }},
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/api/wasm/upload", bytes.NewReader(body))
		req.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)
		parts, err := readMultipart(req, fields)
		if err != nil {
			checkClientError(t, err, http.StatusBadRequest, http.StatusRequestEntityTooLarge)
			return
		}
		for name, p := range parts {
			f, ok := fields[name]
			if !ok {
				t.Fatalf("accepted an unknown field %q", name)
			}
			if int64(len(p.data)) > f.limit {
				t.Fatalf("field %q holds %d bytes; its limit is %d", name, len(p.data), f.limit)
			}
			if base := fileBaseName(p.filename); strings.ContainsAny(base, `/\`) || base == ".." {
				t.Fatalf("fileBaseName(%q) = %q; want one path element", p.filename, base)
			}
		}
	})
}

// checkClientError fails unless err is the contract's error with one of
// the statuses, a code, and a short message in valid UTF-8.
func checkClientError(t *testing.T, err error, statuses ...int) {
	t.Helper()
	var apiErr *Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("error %v (%T); want an *Error", err, err)
	}
	ok := false
	for _, s := range statuses {
		ok = ok || apiErr.Status == s
	}
	if !ok || apiErr.Code == "" {
		t.Fatalf("error %d %s %q; want one of %v with a code", apiErr.Status, apiErr.Code, apiErr.Message, statuses)
	}
	if len(apiErr.Message) > maxErrorMessage || !utf8.ValidString(apiErr.Message) {
		t.Fatalf("message of %d bytes (valid UTF-8: %v): %.100q…; want a short reason", len(apiErr.Message), utf8.ValidString(apiErr.Message), apiErr.Message)
	}
}
