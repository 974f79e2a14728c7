package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const helloSHA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func validRequest() Request {
	return Request{
		ExecutionID:      "0192f0c4-7a1e-7000-8000-000000000001",
		RequestID:        "req-1",
		ModuleID:         "0192f0c4-7a1e-7000-8000-000000000002",
		ModuleSHA256:     helloSHA,
		ModuleName:       "hello.wasm",
		Args:             []string{"--flag", "ünïcode ✓", "line\nbreak"},
		Env:              map[string]string{"KEY": "value", "EMPTY": ""},
		Timeout:          2 * time.Second,
		MemoryLimitBytes: 64 << 20,
		MaxOutputBytes:   1 << 20,
		Stdin:            []byte("hello\x00\xff\n"),
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Request)
		want   string // substring of the error; "" means valid
	}{
		{"valid", func(*Request) {}, ""},
		{"no stdin no args", func(r *Request) { r.Stdin, r.Args, r.Env = nil, nil, nil }, ""},
		{"empty execution id", func(r *Request) { r.ExecutionID = "" }, "execution id"},
		{"long execution id", func(r *Request) { r.ExecutionID = strings.Repeat("x", 129) }, "execution id"},
		{"long request id", func(r *Request) { r.RequestID = strings.Repeat("x", 129) }, "request id"},
		{"short sha", func(r *Request) { r.ModuleSHA256 = "abc" }, "sha256"},
		{"upper-case sha", func(r *Request) { r.ModuleSHA256 = strings.ToUpper(helloSHA) }, "sha256"},
		{"NUL in name", func(r *Request) { r.ModuleName = "a\x00b" }, "module name"},
		{"zero timeout", func(r *Request) { r.Timeout = 0 }, "timeout"},
		{"negative timeout", func(r *Request) { r.Timeout = -time.Second }, "timeout"},
		{"zero memory", func(r *Request) { r.MemoryLimitBytes = 0 }, "memory"},
		{"zero output", func(r *Request) { r.MaxOutputBytes = 0 }, "output"},
		{"NUL in arg", func(r *Request) { r.Args = []string{"ok", "a\x00"} }, "args[1]"},
		{"= in env name", func(r *Request) { r.Env = map[string]string{"A=B": "c"} }, "env name"},
		{"empty env name", func(r *Request) { r.Env = map[string]string{"": "c"} }, "env name"},
		{"NUL in env value", func(r *Request) { r.Env = map[string]string{"A": "\x00"} }, "env A"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := validRequest()
			tt.modify(&r)
			err := r.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v; want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate() = %v; want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestParseRequest(t *testing.T) {
	good := validRequest()
	meta, _ := json.Marshal(newRequestEnvelope(good))

	t.Run("round trip", func(t *testing.T) {
		got, ref, err := parseRequest(frame(meta, good.Stdin))
		if err != nil {
			t.Fatalf("parseRequest(valid) error = %v", err)
		}
		if ref != nil {
			t.Fatalf("parseRequest(valid) ref = %+v; want nil", ref)
		}
		if !reflect.DeepEqual(got, good) {
			t.Fatalf("parseRequest(valid) = %+v; want %+v", got, good)
		}
	})

	t.Run("stdin object", func(t *testing.T) {
		env := newRequestEnvelope(good)
		env.StdinLen, env.StdinObject = 0, &objectRef{Name: "stdin-x", Size: 9}
		m, _ := json.Marshal(env)
		got, ref, err := parseRequest(frame(m))
		if err != nil {
			t.Fatalf("parseRequest(object) error = %v", err)
		}
		if ref == nil || *ref != (objectRef{Name: "stdin-x", Size: 9}) || got.Stdin != nil {
			t.Fatalf("parseRequest(object) = stdin %q ref %+v; want no stdin, ref stdin-x/9", got.Stdin, ref)
		}
	})

	withEnv := func(f func(*requestEnvelope), raw string) []byte {
		env := newRequestEnvelope(good)
		f(&env)
		m, _ := json.Marshal(env)
		return frame(m, []byte(raw))
	}
	bad := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"no separator", meta},
		{"separator only", []byte("\n")},
		{"not json", []byte("hello\nworld")},
		{"json array", []byte("[1,2]\n")},
		{"wrong type", []byte(`{"timeout_ns":"soon"}` + "\n")},
		{"stdin shorter than said", withEnv(func(e *requestEnvelope) { e.StdinLen = 5 }, "abc")},
		{"stdin longer than said", withEnv(func(e *requestEnvelope) { e.StdinLen = 1 }, "abc")},
		{"negative stdin len", withEnv(func(e *requestEnvelope) { e.StdinLen = -1 }, "")},
		{"object and inline", withEnv(func(e *requestEnvelope) {
			e.StdinLen, e.StdinObject = 3, &objectRef{Name: "x", Size: 3}
		}, "abc")},
		{"object without name", withEnv(func(e *requestEnvelope) { e.StdinLen, e.StdinObject = 0, &objectRef{Size: 3} }, "")},
		{"object negative size", withEnv(func(e *requestEnvelope) { e.StdinLen, e.StdinObject = 0, &objectRef{Name: "x", Size: -3} }, "")},
		{"invalid request", withEnv(func(e *requestEnvelope) { e.ModuleSHA256 = "../../etc/passwd"; e.StdinLen = 0 }, "")},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := parseRequest(tt.data); !errors.Is(err, ErrMalformed) {
				t.Fatalf("parseRequest(%q) error = %v; want ErrMalformed", tt.data, err)
			}
		})
	}

	t.Run("ids survive a validation error", func(t *testing.T) {
		got, _, err := parseRequest(withEnv(func(e *requestEnvelope) { e.Timeout = 0; e.StdinLen = 0 }, ""))
		if err == nil || got.ExecutionID != good.ExecutionID || got.RequestID != good.RequestID {
			t.Fatalf("parseRequest(zero timeout) = ids %q/%q, err %v; want the ids and an error", got.ExecutionID, got.RequestID, err)
		}
	})
}

func TestParseReply(t *testing.T) {
	rep := Reply{
		Status: "exit", ExitCode: 3, Stdout: []byte("out\xff"), Stderr: []byte("err"), Truncated: true,
		Error: "exit code 3", Duration: time.Millisecond, MemoryPeak: 65536, QueueTime: time.Microsecond,
		CacheHit: true, Worker: "w1",
	}
	meta, _ := json.Marshal(newReplyEnvelope(rep))
	got, o, e, err := parseReply(frame(meta, rep.Stdout, rep.Stderr))
	if err != nil || o != nil || e != nil {
		t.Fatalf("parseReply(valid) = refs %v %v, error %v; want none", o, e, err)
	}
	if !reflect.DeepEqual(got, rep) {
		t.Fatalf("parseReply(valid) = %+v; want %+v", got, rep)
	}

	failure := Reply{Worker: "w1", Failure: &Failure{Code: FailureModuleNotFound, Message: "gone"}}
	meta, _ = json.Marshal(newReplyEnvelope(failure))
	if got, _, _, err := parseReply(frame(meta)); err != nil || !reflect.DeepEqual(got, failure) {
		t.Fatalf("parseReply(failure) = %+v, %v; want %+v", got, err, failure)
	}

	bad := map[string]string{
		"no status nor failure": `{"stdout_len":0,"stderr_len":0}` + "\n",
		"lengths too long":      `{"status":"ok","stdout_len":5,"stderr_len":0}` + "\nabc",
		"negative length":       `{"status":"ok","stdout_len":-1,"stderr_len":4}` + "\nabc",
		"object and inline":     `{"status":"ok","stdout_len":3,"stderr_len":0,"stdout_object":{"name":"x","size":3}}` + "\nabc",
		"no separator":          `{"status":"ok"}`,
	}
	for name, data := range bad {
		t.Run(name, func(t *testing.T) {
			if _, _, _, err := parseReply([]byte(data)); !errors.Is(err, ErrMalformed) {
				t.Fatalf("parseReply(%q) error = %v; want ErrMalformed", data, err)
			}
		})
	}
}

func TestPayloadBucket(t *testing.T) {
	tests := map[string]string{
		"wasmwiz":      "wasmwiz-payloads",
		"acme.prod":    "acme_prod-payloads",
		"a-b_c":        "a-b_c-payloads",
		"ünï.x":        "_n__x-payloads",
		"tenant.α.dev": "tenant___dev-payloads",
	}
	for prefix, want := range tests {
		if got := PayloadBucket(prefix); got != want {
			t.Errorf("PayloadBucket(%q) = %q; want %q", prefix, got, want)
		}
	}
}

func TestValidPrefix(t *testing.T) {
	for _, p := range []string{"wasmwiz", "acme.prod", "a-b_c"} {
		if err := validPrefix(p); err != nil {
			t.Errorf("validPrefix(%q) = %v; want nil", p, err)
		}
	}
	for _, p := range []string{"", ".", "a.", ".a", "a..b", "a.*", "a.>", "a b"} {
		if err := validPrefix(p); err == nil {
			t.Errorf("validPrefix(%q) = nil; want an error", p)
		}
	}
}

func TestFrameHasNoBase64(t *testing.T) {
	r := validRequest()
	r.Stdin = bytes.Repeat([]byte{0xff, 0x00}, 100)
	meta, _ := json.Marshal(newRequestEnvelope(r))
	data := frame(meta, r.Stdin)
	if !bytes.HasSuffix(data, r.Stdin) || len(data) != len(meta)+1+len(r.Stdin) {
		t.Fatalf("frame: stdin is not carried raw after the envelope")
	}
}
