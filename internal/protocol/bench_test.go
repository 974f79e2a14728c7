package protocol

import (
	"context"
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
