package worker

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/runner"
	"github.com/wasmwiz/wasmwiz/testdata"
)

// BenchmarkExecuteNATS measures a hot execution of hello end to end below
// HTTP: Client.Execute → NATS → worker → wazero (cached module) → reply.
// The "runner" sub-benchmark is the same execution without NATS, so the
// difference is what the protocol and the worker cost.
//
//	go test -run '^$' -bench BenchmarkExecuteNATS -benchmem ./internal/worker/
func BenchmarkExecuteNATS(b *testing.B) {
	r, err := runner.New(context.Background(), runner.Config{CacheBytes: 64 << 20})
	if err != nil {
		b.Fatalf("runner.New error = %v", err)
	}
	b.Cleanup(func() { _ = r.Close(context.Background()) })
	mods, shas := blobsOf(testdata.Module("hello"))
	req := request(shas[0])
	req.Stdin = nil
	ex := runner.Execution{
		SHA256: req.ModuleSHA256, Name: req.ModuleName, Args: req.Args, Env: req.Env,
		Timeout: req.Timeout, MemoryLimitBytes: req.MemoryLimitBytes, MaxOutputBytes: int(req.MaxOutputBytes),
	}
	load := func(ctx context.Context) ([]byte, error) { return mods.BlobBytes(ctx, req.ModuleSHA256) }

	// check may run on RunParallel's goroutines: Error, not Fatal.
	check := func(b *testing.B, rep protocol.Reply, err error) bool {
		if err != nil || rep.Status != "ok" || string(rep.Stdout) != "hello, world\n" {
			b.Errorf("Execute(hello) = status %q stdout %q failure %+v, error %v; want ok", rep.Status, rep.Stdout, rep.Failure, err)
			return false
		}
		return true
	}

	b.Run("runner", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			res, err := r.Run(context.Background(), ex, load)
			if err != nil || res.Status != runner.StatusOK {
				b.Fatalf("Run(hello) = %s, %v; want ok", res.Status, err)
			}
			res.Release()
		}
	})

	h := newHarness(b)
	h.start(b, r, workerOpts{blobs: mods, concurrency: runtime.GOMAXPROCS(0)})
	ctx := context.Background()
	rep, err := h.client.Execute(ctx, req) // compile once, outside the timing
	if !check(b, rep, err) {
		b.FailNow()
	}

	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			rep, err := h.client.Execute(ctx, req)
			cancel()
			if !check(b, rep, err) {
				b.FailNow()
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(4) // requests in flight per GOMAXPROCS: keep the worker busy
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				rep, err := h.client.Execute(ctx, req)
				cancel()
				if !check(b, rep, err) {
					return
				}
			}
		})
	})
}
