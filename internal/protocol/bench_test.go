package protocol

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// BenchmarkRoundTrip compares a bare NATS request-reply with Client.Execute
// against a Responder that answers at once, so that the protocol's own cost
// (envelopes, framing, decode) shows apart from NATS and from the worker.
//
//	go test -run '^$' -bench BenchmarkRoundTrip -benchmem ./internal/protocol/
func BenchmarkRoundTrip(b *testing.B) {
	nc := connect(b)
	prefix := testPrefix(b, nc)
	serve(b, prefix, func(r Request) Reply {
		return Reply{Status: "ok", Stdout: []byte("hello, world\n"), Worker: "bench"}
	})
	raw, err := connect(b).Subscribe(prefix+".raw", func(m *nats.Msg) { _ = m.Respond([]byte("hello, world\n")) })
	if err != nil {
		b.Fatalf("subscribe: %v", err)
	}
	b.Cleanup(func() { _ = raw.Unsubscribe() })
	c := newClient(b, nc, prefix)
	req := validRequest()

	b.Run("nats", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := nc.RequestWithContext(ctx, prefix+".raw", req.Stdin)
			cancel()
			if err != nil {
				b.Fatalf("Request error = %v", err)
			}
		}
	})
	b.Run("execute", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			rep, err := c.Execute(ctx, req)
			cancel()
			if err != nil || rep.Status != "ok" {
				b.Fatalf("Execute = %+v, %v; want ok", rep, err)
			}
		}
	})
}

// helloRequest is what the api sends for the hello module: ids as UUIDs, no
// args or env, a few bytes of stdin.
func helloRequest() Request {
	return Request{
		ExecutionID:      "0193a5b2-7c4e-7d1f-9a2b-3c4d5e6f7a8b",
		RequestID:        "0193a5b2-7c4d-7e2a-8b1c-2d3e4f5a6b7c",
		ModuleID:         "0193a5a0-1b2c-7d3e-8f4a-5b6c7d8e9f0a",
		ModuleSHA256:     "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
		ModuleName:       "hello.wasm",
		Timeout:          10 * time.Second,
		MemoryLimitBytes: 64 << 20,
		MaxOutputBytes:   1 << 20,
		Stdin:            []byte("world"),
	}
}

func helloReply() Reply {
	return Reply{
		Status:     "ok",
		Stdout:     []byte("hello, world\n"),
		Duration:   183 * time.Microsecond,
		MemoryPeak: 1 << 17,
		QueueTime:  21 * time.Microsecond,
		CacheHit:   true,
		Worker:     "worker-7f9c2d41",
	}
}

// The Envelope and Parse benchmarks compare encoding/json (json) with the
// hand-written appenders and decoder (fast) on what every execution sends:
//
//	go test -run '^$' -bench 'Envelope|Parse' -benchmem -count 5 ./internal/protocol/
func BenchmarkEnvelopeEncodeRequest(b *testing.B) {
	env := newRequestEnvelope(helloRequest())
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(env); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = env.appendJSON(nil)
		}
	})
}

func BenchmarkEnvelopeEncodeReply(b *testing.B) {
	env := newReplyEnvelope(helloReply())
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(env); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = env.appendJSON(nil)
		}
	})
}

func BenchmarkParseRequest(b *testing.B) {
	req := helloRequest()
	data := frame(newRequestEnvelope(req).appendJSON(nil), req.Stdin)
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := parseRequestJSON(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := parseRequest(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkParseReply(b *testing.B) {
	rep := helloReply()
	data := frame(newReplyEnvelope(rep).appendJSON(nil), rep.Stdout, rep.Stderr)
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, _, err := parseReplyJSON(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, _, err := parseReply(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
