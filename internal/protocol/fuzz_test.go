package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// FuzzDecodeRequest feeds hostile bodies to the worker's decoder: it must
// return an error wrapping ErrMalformed or a valid request, never panic, and
// what it accepts must survive another encode/decode unchanged.
func FuzzDecodeRequest(f *testing.F) {
	good := validRequest()
	meta, _ := json.Marshal(newRequestEnvelope(good))
	f.Add(frame(meta, good.Stdin))
	env := newRequestEnvelope(good)
	env.StdinLen, env.StdinObject = 0, &objectRef{Name: "stdin-abc", Size: 1 << 20}
	meta, _ = json.Marshal(env)
	f.Add(frame(meta))
	f.Add([]byte{})
	f.Add([]byte("\n"))
	f.Add([]byte("{}\n"))
	f.Add([]byte("null\n"))
	f.Add([]byte(`{"stdin_len":-5}` + "\n"))
	f.Add([]byte(`{"stdin_len":9223372036854775807}` + "\nx"))
	f.Add([]byte(`{"timeout_ns":1e400}` + "\n"))
	f.Add([]byte(`{"args":[1,2],"env":{"a":1}}` + "\n"))
	f.Add([]byte(`{"stdin_object":{"name":"","size":-1}}` + "\n"))
	f.Add([]byte("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n"))
	f.Add([]byte("\xff\xfe\x00\n\x00"))

	f.Fuzz(func(t *testing.T, data []byte) {
		req, ref, err := parseRequest(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("parseRequest error = %v; want ErrMalformed", err)
			}
			return
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("parseRequest accepted a request Validate rejects: %v", err)
		}
		env := newRequestEnvelope(req)
		if ref != nil {
			env.StdinLen, env.StdinObject = 0, ref
		}
		meta, err := json.Marshal(env)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if fast := env.appendJSON(nil); !bytes.Equal(fast, meta) {
			t.Fatalf("appendJSON = %s; json.Marshal = %s", fast, meta)
		}
		again, ref2, err := parseRequest(frame(meta, req.Stdin))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !reflect.DeepEqual(again, req) || !reflect.DeepEqual(ref2, ref) {
			t.Fatalf("round trip changed the request: %+v != %+v", again, req)
		}
	})
}

// FuzzDecodeReply does the same for the api's side: a garbled reply from a
// worker is an error, never a panic.
func FuzzDecodeReply(f *testing.F) {
	rep := Reply{Status: "ok", Stdout: []byte("out"), Stderr: []byte("err"), Worker: "w"}
	meta, _ := json.Marshal(newReplyEnvelope(rep))
	f.Add(frame(meta, rep.Stdout, rep.Stderr))
	f.Add([]byte(`{"status":"ok","stdout_len":0,"stderr_len":0,"stdout_object":{"name":"x","size":5}}` + "\n"))
	f.Add([]byte(`{"failure":{"code":"internal"},"stdout_len":2,"stderr_len":-1}` + "\nx"))
	f.Add([]byte("\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, o, e, err := parseReply(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("parseReply error = %v; want ErrMalformed", err)
			}
			return
		}
		if n := len(rep.Stdout) + len(rep.Stderr); n > len(data) {
			t.Fatalf("parseReply made %d output bytes out of a %d-byte body", n, len(data))
		}
		if (o != nil && o.Size < 0) || (e != nil && e.Size < 0) {
			t.Fatalf("parseReply accepted a negative object size")
		}
	})
}

// FuzzEncodeRequestEnvelope: for any field values, appendJSON writes byte for
// byte what json.Marshal writes, since workers of other versions decode it.
// The seeds are under testdata/fuzz/FuzzEncodeRequestEnvelope.
func FuzzEncodeRequestEnvelope(f *testing.F) {
	f.Add("0192f0c4-7a1e-7000-8000-000000000001", "req-1", "0192f0c4-7a1e-7000-8000-000000000002", helloSHA,
		"hello.wasm", "<arg & \"quote\">", "K\u2028", "v\xff\x00", int64(2e9), uint64(64<<20), int64(1<<20), 5,
		"stdin-x", int64(9), uint8(0xff))
	f.Fuzz(func(t *testing.T, execID, reqID, modID, sha, name, arg, key, val string,
		timeout int64, mem uint64, maxOut int64, stdinLen int, objName string, objSize int64, shape uint8) {
		env := requestEnvelope{
			ExecutionID: execID, RequestID: reqID, ModuleID: modID, ModuleSHA256: sha, ModuleName: name,
			Timeout: time.Duration(timeout), MemoryLimitBytes: mem, MaxOutputBytes: maxOut, StdinLen: stdinLen,
		}
		switch {
		case shape&1 != 0:
			env.Args = []string{arg, key, "", val}
		case shape&2 != 0:
			env.Args = []string{}
		}
		switch {
		case shape&4 != 0:
			// Several keys, so that their order is exercised too.
			env.Env = map[string]string{key: val, val: key, arg: name, execID: sha, "": ""}
		case shape&8 != 0:
			env.Env = map[string]string{}
		}
		if shape&16 != 0 {
			env.StdinObject = &objectRef{Name: objName, Size: objSize}
		}
		want, err := json.Marshal(env)
		if err != nil {
			t.Fatalf("json.Marshal error = %v", err)
		}
		if got := env.appendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("appendJSON =\n%q\nwant (json.Marshal)\n%q", got, want)
		}
		// What json.Marshal writes is what the fast decoder is for: when it
		// takes it, it must read it as encoding/json does.
		var fast, std requestEnvelope
		handled := fast.decodeFast(want)
		if err := json.Unmarshal(want, &std); err != nil {
			t.Fatalf("json.Unmarshal(%q) error = %v", want, err)
		}
		if handled && !reflect.DeepEqual(fast, std) {
			t.Fatalf("fast path decoded %q as\n%#v\nwant (json.Unmarshal)\n%#v", want, fast, std)
		}
	})
}

// FuzzEncodeReplyEnvelope does the same for the reply.
func FuzzEncodeReplyEnvelope(f *testing.F) {
	f.Add("ok", "exit code 3 <&>", "worker-1", "internal", "boom \u2029\xfe", "stdout-x", uint32(3),
		int64(183000), int64(-1), uint64(1<<17), 13, 0, int64(5), uint8(0xff))
	f.Fuzz(func(t *testing.T, status, errText, worker, code, message, objName string, exit uint32,
		duration, queue int64, peak uint64, stdoutLen, stderrLen int, objSize int64, shape uint8) {
		env := replyEnvelope{
			Status: status, ExitCode: exit, Truncated: shape&1 != 0, Error: errText,
			Duration: time.Duration(duration), MemoryPeak: peak, QueueTime: time.Duration(queue),
			CacheHit: shape&2 != 0, Worker: worker, StdoutLen: stdoutLen, StderrLen: stderrLen,
		}
		if shape&4 != 0 {
			env.Failure = &Failure{Code: FailureCode(code), Message: message}
		}
		if shape&8 != 0 {
			env.StdoutObject = &objectRef{Name: objName, Size: objSize}
		}
		if shape&16 != 0 {
			env.StderrObject = &objectRef{Name: message, Size: -objSize}
		}
		want, err := json.Marshal(env)
		if err != nil {
			t.Fatalf("json.Marshal error = %v", err)
		}
		if got := env.appendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("appendJSON =\n%q\nwant (json.Marshal)\n%q", got, want)
		}
		var fast, std replyEnvelope
		handled := fast.decodeFast(want)
		if err := json.Unmarshal(want, &std); err != nil {
			t.Fatalf("json.Unmarshal(%q) error = %v", want, err)
		}
		if handled && !reflect.DeepEqual(fast, std) {
			t.Fatalf("fast path decoded %q as\n%#v\nwant (json.Unmarshal)\n%#v", want, fast, std)
		}
	})
}

// envelopeOf is what unframe hands to the envelope decoder.
func envelopeOf(body []byte) []byte {
	if i := bytes.IndexByte(body, envelopeEnd); i >= 0 {
		return body[:i]
	}
	return body
}

// FuzzDecodeRequestEnvelope: for any body, the fast decoder with its fallback
// gives what encoding/json gives, value and error alike, both for the
// envelope alone and for parseRequest as a whole. The seeds (real envelopes
// and irregular ones) are under testdata/fuzz/FuzzDecodeRequestEnvelope.
func FuzzDecodeRequestEnvelope(f *testing.F) {
	for _, env := range trickyRequestEnvelopes() {
		f.Add(frame(env.appendJSON(nil), make([]byte, max(env.StdinLen, 0)%64)))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		meta := envelopeOf(body)
		var got, want requestEnvelope
		gotErr, wantErr := decodeEnvelope(meta, &got), json.Unmarshal(meta, &want)
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
			t.Fatalf("decodeEnvelope(%q) =\n%#v, %v\nwant (json.Unmarshal)\n%#v, %v", meta, got, gotErr, want, wantErr)
		}
		if wantErr == nil {
			// Decoded values are fuzzed values for the encoder too.
			enc, err := json.Marshal(want)
			if err != nil || !bytes.Equal(want.appendJSON(nil), enc) {
				t.Fatalf("appendJSON = %q; json.Marshal = %q, %v", want.appendJSON(nil), enc, err)
			}
		}
		req, ref, err := parseRequest(body)
		wantReq, wantRef, wantErr := parseRequestJSON(body)
		if fmt.Sprint(err) != fmt.Sprint(wantErr) || !reflect.DeepEqual(req, wantReq) || !reflect.DeepEqual(ref, wantRef) {
			t.Fatalf("parseRequest(%q) =\n%#v, %#v, %v\nwant (encoding/json)\n%#v, %#v, %v", body, req, ref, err, wantReq, wantRef, wantErr)
		}
	})
}

// FuzzDecodeReplyEnvelope does the same for the reply and parseReply.
func FuzzDecodeReplyEnvelope(f *testing.F) {
	for _, env := range trickyReplyEnvelopes() {
		f.Add(frame(env.appendJSON(nil), make([]byte, max(env.StdoutLen, 0)%64)))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		meta := envelopeOf(body)
		var got, want replyEnvelope
		gotErr, wantErr := decodeEnvelope(meta, &got), json.Unmarshal(meta, &want)
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
			t.Fatalf("decodeEnvelope(%q) =\n%#v, %v\nwant (json.Unmarshal)\n%#v, %v", meta, got, gotErr, want, wantErr)
		}
		if wantErr == nil {
			enc, err := json.Marshal(want)
			if err != nil || !bytes.Equal(want.appendJSON(nil), enc) {
				t.Fatalf("appendJSON = %q; json.Marshal = %q, %v", want.appendJSON(nil), enc, err)
			}
		}
		rep, o, e, err := parseReply(body)
		wantRep, wantO, wantE, wantErr := parseReplyJSON(body)
		if fmt.Sprint(err) != fmt.Sprint(wantErr) || !reflect.DeepEqual(rep, wantRep) ||
			!reflect.DeepEqual(o, wantO) || !reflect.DeepEqual(e, wantE) {
			t.Fatalf("parseReply(%q) =\n%#v, %v, %v, %v\nwant (encoding/json)\n%#v, %v, %v, %v",
				body, rep, o, e, err, wantRep, wantO, wantE, wantErr)
		}
	})
}
