package protocol

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
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
