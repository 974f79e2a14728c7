package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// parseRequestJSON is parseRequest as it was before the fast path: the
// reference the fuzz targets and benchmarks compare it with.
func parseRequestJSON(data []byte) (Request, *objectRef, error) {
	var env requestEnvelope
	rest, err := unframeJSON(data, &env)
	if err != nil {
		return Request{}, nil, err
	}
	return env.request(rest)
}

// parseReplyJSON is parseReply as it was before the fast path.
func parseReplyJSON(data []byte) (Reply, *objectRef, *objectRef, error) {
	var env replyEnvelope
	rest, err := unframeJSON(data, &env)
	if err != nil {
		return Reply{}, nil, nil, err
	}
	return env.reply(rest)
}

func unframeJSON(data []byte, env any) ([]byte, error) {
	i := bytes.IndexByte(data, envelopeEnd)
	if i < 0 {
		return nil, fmt.Errorf("%w: no envelope", ErrMalformed)
	}
	if err := json.Unmarshal(data[:i], env); err != nil {
		return nil, fmt.Errorf("%w: envelope: %w", ErrMalformed, err)
	}
	return data[i+1:], nil
}

// trickyStrings are the values whose escaping json.Marshal decides on:
// HTML characters, control characters, invalid UTF-8 of every kind, the
// JavaScript line separators, and plain text around them.
var trickyStrings = []string{
	"",
	"plain",
	"0192f0c4-7a1e-7000-8000-000000000001",
	`<script>alert("x&y")</script>`,
	`"quoted" \back\slash\ /slash/ 'single'`,
	"\b\f\n\r\t",
	"\x00\x01\x07\x0b\x0e\x1b\x1f\x20\x7f",
	"\xff",
	"a\xffb\xfe",
	"\xc3",             // a truncated two-byte sequence
	"\xc3(",            // a lead byte without its continuation
	"\xe2\x82",         // a truncated three-byte sequence
	"\xed\xa0\x80",     // an encoded surrogate, invalid in UTF-8
	"\xf4\x90\x80\x80", // beyond U+10FFFF
	"\xc0\xaf",         // an overlong '/'
	"\u2028\u2029 and \u2027\u202a",
	"ünïcode ✓ 日本語 😀",
	"\u0085\u00a0\ufeff\ufffd\U0010ffff",
	"line\nbreak",
	strings.Repeat("<&>", 50) + strings.Repeat("é", 50),
}

func trickyRequestEnvelopes() []requestEnvelope {
	var envs []requestEnvelope
	for _, s := range trickyStrings {
		envs = append(envs, requestEnvelope{
			ExecutionID: s, RequestID: s, ModuleID: s, ModuleSHA256: s, ModuleName: s,
			Args: []string{s, "", s + s}, Env: map[string]string{s: s, "K": s},
			Timeout: 2 * time.Second, MemoryLimitBytes: 64 << 20, MaxOutputBytes: 1 << 20, StdinLen: len(s),
		})
	}
	manyKeys := map[string]string{}
	for _, k := range []string{"<", ";", "=", ">", "&", "%", "'", "\xff", "é", "e", "E",
		"a\x00", "a", "a\x01", "\u2028", "\u2027", "😀", "\U0010ffff", `\`, `"`, "Z", "z", " "} {
		manyKeys[k] = k
	}
	envs = append(envs,
		requestEnvelope{},
		newRequestEnvelope(validRequest()),
		newRequestEnvelope(helloRequest()),
		requestEnvelope{ExecutionID: "e", Env: manyKeys},
		requestEnvelope{ExecutionID: "e", Args: []string{}, Env: map[string]string{}}, // omitted like nil
		requestEnvelope{ExecutionID: "e", Args: []string{""}, Env: map[string]string{"": ""}},
		requestEnvelope{
			ExecutionID: "e", Timeout: math.MinInt64, MemoryLimitBytes: math.MaxUint64,
			MaxOutputBytes: math.MaxInt64, StdinLen: math.MinInt, StdinObject: &objectRef{Name: "stdin-\xff<", Size: math.MinInt64},
		},
		requestEnvelope{ExecutionID: "e", Timeout: -1, MaxOutputBytes: -1, StdinLen: -1, StdinObject: &objectRef{}},
		requestEnvelope{ExecutionID: "e", StdinObject: &objectRef{Name: "stdin-HrwMaoBgQpbjmfJtNHxfOm", Size: 1 << 24}},
	)
	return envs
}

func trickyReplyEnvelopes() []replyEnvelope {
	var envs []replyEnvelope
	for _, s := range trickyStrings {
		envs = append(envs, replyEnvelope{
			Status: s, ExitCode: 1, Error: s, Worker: s, Truncated: true, CacheHit: true,
			Failure: &Failure{Code: FailureCode(s), Message: s}, StdoutLen: len(s),
			StdoutObject: &objectRef{Name: s, Size: 1}, StderrObject: &objectRef{Name: s},
		})
	}
	envs = append(envs,
		replyEnvelope{},
		newReplyEnvelope(helloReply()),
		replyEnvelope{Failure: &Failure{}},
		replyEnvelope{
			Status: "exit", ExitCode: math.MaxUint32, Duration: math.MaxInt64, MemoryPeak: math.MaxUint64,
			QueueTime: math.MinInt64, StdoutLen: math.MaxInt, StderrLen: math.MinInt,
		},
		replyEnvelope{Status: "ok", Duration: -1, QueueTime: -1, StdoutLen: -1, StderrLen: -1},
		replyEnvelope{Status: "ok", StderrObject: &objectRef{Name: "stderr-x", Size: 3}},
	)
	return envs
}

func TestAppendJSONMatchesMarshal(t *testing.T) {
	for i, env := range trickyRequestEnvelopes() {
		want, err := json.Marshal(env)
		if err != nil {
			t.Fatalf("json.Marshal(request %d) error = %v", i, err)
		}
		if got := env.appendJSON(nil); !bytes.Equal(got, want) {
			t.Errorf("request %d: appendJSON =\n%s\nwant (json.Marshal)\n%s", i, got, want)
		}
		// It appends, as its name says.
		if got := env.appendJSON([]byte("prefix")); !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Errorf("request %d: appendJSON(prefix) = %s; want prefix%s", i, got, want)
		}
	}
	for i, env := range trickyReplyEnvelopes() {
		want, err := json.Marshal(env)
		if err != nil {
			t.Fatalf("json.Marshal(reply %d) error = %v", i, err)
		}
		if got := env.appendJSON(nil); !bytes.Equal(got, want) {
			t.Errorf("reply %d: appendJSON =\n%s\nwant (json.Marshal)\n%s", i, got, want)
		}
	}
}

// TestDecodeEnvelopeFastHandles pins that the fast path is used at all: it
// must take everything appendJSON writes (numbers of up to 18 digits) and
// decode it as encoding/json does.
func TestDecodeEnvelopeFastHandles(t *testing.T) {
	for i, env := range trickyRequestEnvelopes() {
		if env.MemoryLimitBytes == math.MaxUint64 {
			continue // 20 digits: encoding/json's
		}
		meta := env.appendJSON(nil)
		var fast, std requestEnvelope
		if !fast.decodeFast(meta) {
			t.Errorf("request %d: fast path declined %s", i, meta)
			continue
		}
		if err := json.Unmarshal(meta, &std); err != nil {
			t.Fatalf("request %d: json.Unmarshal(%s) error = %v", i, meta, err)
		}
		if !reflect.DeepEqual(fast, std) {
			t.Errorf("request %d: fast path decoded %s as\n%#v\nwant (json.Unmarshal)\n%#v", i, meta, fast, std)
		}
	}
	for i, env := range trickyReplyEnvelopes() {
		if env.MemoryPeak == math.MaxUint64 {
			continue
		}
		meta := env.appendJSON(nil)
		var fast, std replyEnvelope
		if !fast.decodeFast(meta) {
			t.Errorf("reply %d: fast path declined %s", i, meta)
			continue
		}
		if err := json.Unmarshal(meta, &std); err != nil {
			t.Fatalf("reply %d: json.Unmarshal(%s) error = %v", i, meta, err)
		}
		if !reflect.DeepEqual(fast, std) {
			t.Errorf("reply %d: fast path decoded %s as\n%#v\nwant (json.Unmarshal)\n%#v", i, meta, fast, std)
		}
	}

	// What other encoders may write and the fast path still understands.
	handled := []string{
		`{}`,
		`{"execution_id":"a\"b\\c\/d\b\f\n\r\t\u00e9\u0000\u2028\uFFFD\uabcd"}`,
		`{"args":[],"env":{}}`,
		`{"args":["\u003c"],"env":{"\u003c":"\u003e",">":"<"}}`,
		`{"timeout_ns":-0,"stdin_len":0,"max_output_bytes":-999999999999999999}`,
		`{"memory_limit_bytes":999999999999999999,"stdin_object":{}}`,
		`{"stdin_object":{"size":5,"name":"n"},"execution_id":"e"}`,
	}
	for _, in := range handled {
		var fast, std requestEnvelope
		if !fast.decodeFast([]byte(in)) {
			t.Errorf("fast path declined %s", in)
			continue
		}
		if err := json.Unmarshal([]byte(in), &std); err != nil || !reflect.DeepEqual(fast, std) {
			t.Errorf("fast path decoded %s as %#v; json.Unmarshal: %#v, %v", in, fast, std, err)
		}
	}
}

// TestDecodeEnvelopeFastDeclines lists irregular envelopes the fast path must
// leave to encoding/json, and checks that decodeEnvelope then answers exactly
// as encoding/json does, errors included.
func TestDecodeEnvelopeFastDeclines(t *testing.T) {
	requests := []string{
		``, `null`, `[]`, `{`, `}`, `{}}`, `{},`, `{}x`, `{"execution_id":"a"}x`,
		`{"Execution_id":"case"}`, `{"EXECUTION_ID":"case"}`, `{"module_ſha256":"fold"}`,
		`{"execution_id":"a","execution_id":"b"}`,
		`{"env":{"a":"1"},"env":{"b":"2"}}`,
		`{"env":{"a":"1","a":"2"}}`,
		`{"env":{"<":"1","\u003c":"2"}}`,
		`{"env":{"\ufffd":"\ufffd","\ufffd":"\ufffd"}}`, // how json.Marshal writes {"\xfe": ..., "\xff": ...}
		`{"stdin_object":{"name":"a","name":"b"}}`,
		`{"stdin_object":{"Name":"a"}}`,
		`{"stdin_object":{"name":"a","size":1,"extra":true}}`,
		`{"unknown":1}`, `{"execution_id":"e","future_field":{"x":[1,2]}}`,
		`{"\u0065xecution_id":"escaped key"}`,
		` {}`, `{} `, `{ "execution_id":"e"}`, `{"execution_id" :"e"}`, `{"execution_id": "e"}`, "{}\t", "{\r}",
		`{"execution_id":null}`, `{"args":null}`, `{"env":null}`, `{"stdin_object":null}`, `{"args":[null]}`,
		`{"execution_id":"\ud83d\ude00"}`, `{"execution_id":"\ud800"}`, `{"execution_id":"\udc00x"}`,
		`{"execution_id":"\'"}`, `{"execution_id":"\x"}`, `{"execution_id":"\u12"}`, `{"execution_id":"\u12g4"}`,
		"{\"execution_id\":\"\x01\"}", "{\"execution_id\":\"\xff\"}", "{\"execution_id\":\"a\xc3\"}",
		"{\"execution_id\":\"\xed\xa0\x80\"}",
		`{"execution_id":"unterminated}`, `{"execution_id":"a\"}`,
		`{"timeout_ns":1.0}`, `{"timeout_ns":1e9}`, `{"timeout_ns":1E9}`, `{"timeout_ns":01}`, `{"timeout_ns":-}`,
		`{"timeout_ns":+1}`, `{"timeout_ns":"1"}`, `{"timeout_ns":9223372036854775807}`,
		`{"timeout_ns":9223372036854775808}`, `{"timeout_ns":1000000000000000000}`,
		`{"memory_limit_bytes":-1}`, `{"memory_limit_bytes":-0}`, `{"memory_limit_bytes":18446744073709551616}`,
		`{"stdin_len":true}`, `{"args":"a"}`, `{"args":[1]}`, `{"args":["a",]}`, `{"args":["a"}`, `{"args":[["a"]]}`,
		`{"env":{"a":1}}`, `{"env":{"a":"b",}}`, `{"env":[]}`, `{"env":{"a"}}`,
		`{"stdin_object":[]}`, `{"stdin_object":{"size":1.5}}`, `{"stdin_object":"x"}`,
		`{"execution_id":"e",}`, `{,}`, `{"execution_id"}`, `{"execution_id":}`,
	}
	for _, in := range requests {
		var fast requestEnvelope
		if fast.decodeFast([]byte(in)) {
			t.Errorf("fast path took %q; it must leave it to encoding/json", in)
		}
		var got, want requestEnvelope
		gotErr, wantErr := decodeEnvelope([]byte(in), &got), json.Unmarshal([]byte(in), &want)
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
			t.Errorf("decodeEnvelope(%q) = %#v, %v; want (json.Unmarshal) %#v, %v", in, got, gotErr, want, wantErr)
		}
	}

	replies := []string{
		`{"status":"ok","STATUS":"ok"}`, `{"status":"ok","status":"exit"}`,
		`{"truncated":tru}`, `{"truncated":"true"}`, `{"truncated":1}`, `{"cache_hit":true,"cache_hit":false}`,
		`{"cache_hit":nul}`, `{"cache_hit":null}`,
		`{"exit_code":4294967296}`, `{"exit_code":-1}`, `{"exit_code":1.0}`,
		`{"failure":{"code":"x","extra":1}}`, `{"failure":{"code":"x","code":"y"}}`, `{"failure":null}`,
		`{"failure":{"Message":"m"}}`, `{"stderr_object":{"name":"a"},"stderr_object":{"size":1}}`,
		`{"duration_ns":12345678901234567890}`, `{"worker":"w","Worker":"v"}`,
	}
	for _, in := range replies {
		var fast replyEnvelope
		if fast.decodeFast([]byte(in)) {
			t.Errorf("fast path took %q; it must leave it to encoding/json", in)
		}
		var got, want replyEnvelope
		gotErr, wantErr := decodeEnvelope([]byte(in), &got), json.Unmarshal([]byte(in), &want)
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
			t.Errorf("decodeEnvelope(%q) = %#v, %v; want (json.Unmarshal) %#v, %v", in, got, gotErr, want, wantErr)
		}
	}
}

// TestDecodeEnvelopeIntoFilled: json.Unmarshal merges into what the envelope
// already holds; decodeEnvelope must too, though its callers pass zero ones.
func TestDecodeEnvelopeIntoFilled(t *testing.T) {
	fill := func() requestEnvelope {
		return requestEnvelope{ExecutionID: "old", Env: map[string]string{"OLD": "1"}, StdinObject: &objectRef{Name: "old", Size: 1}}
	}
	in := []byte(`{"request_id":"new","env":{"NEW":"2"},"stdin_object":{"size":2}}`)
	got, want := fill(), fill()
	gotErr, wantErr := decodeEnvelope(in, &got), json.Unmarshal(in, &want)
	if gotErr != nil || wantErr != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeEnvelope(filled) = %#v, %v; want (json.Unmarshal) %#v, %v", got, gotErr, want, wantErr)
	}
	if got.Env["OLD"] != "1" || got.StdinObject.Name != "old" || got.ExecutionID != "old" {
		t.Fatalf("decodeEnvelope(filled) = %#v; want the old values kept, as json.Unmarshal keeps them", got)
	}
}

func TestUnframeOnlyEnvelopes(t *testing.T) {
	var m map[string]any
	var nilEnv *requestEnvelope
	for _, env := range []any{&m, nilEnv, (*replyEnvelope)(nil), requestEnvelope{}, nil} {
		if _, err := unframe([]byte("{}\n"), env); !errors.Is(err, errNotEnvelope) {
			t.Errorf("unframe(%T) error = %v; want errNotEnvelope", env, err)
		}
	}
}

// TestAppendJSONAllocatesOnce pins the size hints: one allocation when
// nothing needs escaping, even with the longest numbers.
func TestAppendJSONAllocatesOnce(t *testing.T) {
	req := requestEnvelope{
		ExecutionID: "e", RequestID: "r", ModuleID: "m", ModuleSHA256: helloSHA, ModuleName: "n",
		Args: []string{"a", "b"}, Env: map[string]string{"K": "V", "L": "W"},
		Timeout: math.MinInt64, MemoryLimitBytes: math.MaxUint64, MaxOutputBytes: math.MinInt64, StdinLen: math.MinInt,
		StdinObject: &objectRef{Name: "stdin-x", Size: math.MinInt64},
	}
	rep := replyEnvelope{
		Status: "s", ExitCode: math.MaxUint32, Truncated: true, Error: "e", Duration: math.MinInt64,
		MemoryPeak: math.MaxUint64, QueueTime: math.MinInt64, CacheHit: true, Worker: "w",
		Failure:   &Failure{Code: FailureInternal, Message: "m"},
		StdoutLen: math.MinInt, StderrLen: math.MinInt,
		StdoutObject: &objectRef{Name: "o", Size: math.MinInt64}, StderrObject: &objectRef{Name: "e", Size: math.MinInt64},
	}
	helloReq, helloRep := newRequestEnvelope(helloRequest()), newReplyEnvelope(helloReply())
	for name, enc := range map[string]func([]byte) []byte{
		"request":       req.appendJSON,
		"hello request": helloReq.appendJSON,
		"reply":         rep.appendJSON,
		"hello reply":   helloRep.appendJSON,
	} {
		if n := testing.AllocsPerRun(10, func() { _ = enc(nil) }); n != 1 {
			t.Errorf("%s: appendJSON(nil) made %v allocations; want 1", name, n)
		}
	}
}
