package runner

import (
	"context"
	"testing"

	"github.com/wasmwiz/wasmwiz/testdata"
)

// benchRun runs one module b.N times on a warm cache.
func benchRun(b *testing.B, module, stdin, wantStdout string) {
	r := newRunner(b, Config{})
	ex, wasm := execution(module)
	ex.Stdin = []byte(stdin)
	load := loaderOf(wasm)
	ctx := context.Background()
	for i := 0; i < 2; i++ { // compile, then prove the cache hits
		res, err := r.Run(ctx, ex, load)
		if err != nil || res.Status != StatusOK || string(res.Stdout) != wantStdout {
			b.Fatalf("Run(%s) = %s %q, %v; want ok %q", module, res.Status, res.Stdout, err, wantStdout)
		}
		if i == 1 && !res.CacheHit {
			b.Fatalf("Run(%s) second run cache hit = false; want true", module)
		}
		res.Release()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := r.Run(ctx, ex, load)
		if err != nil || res.Status != StatusOK {
			b.Fatalf("Run(%s) = %s, %v", module, res.Status, err)
		}
		res.Release()
	}
}

func BenchmarkRunHelloCached(b *testing.B) {
	benchRun(b, "hello", "", "hello, world\n")
}

// BenchmarkRunHelloCachedParallel is a worker running many executions at
// once (GOMAXPROCS goroutines).
func BenchmarkRunHelloCachedParallel(b *testing.B) {
	r := newRunner(b, Config{})
	ex, wasm := execution("hello")
	load := loaderOf(wasm)
	if _, err := r.Run(context.Background(), ex, load); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := r.Run(context.Background(), ex, load)
			if err != nil || res.Status != StatusOK {
				b.Errorf("Run(hello) = %s, %v", res.Status, err)
				return
			}
			res.Release()
		}
	})
}

func BenchmarkRunCPU(b *testing.B) {
	benchRun(b, "cpu", "", "2147403606448073\n")
}

func BenchmarkRunGoHello(b *testing.B) {
	benchRun(b, "goprog", "hello", "hello from Go on WASI\n")
}

// BenchmarkRunHelloCold compiles on every run: each op is a new module.
func BenchmarkRunHelloCold(b *testing.B) {
	r := newRunner(b, Config{})
	hello := testdata.Module("hello")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		wasm := variant(hello, i)
		ex, _ := execution("hello")
		ex.SHA256 = shaOf(wasm)
		b.StartTimer()
		res, err := r.Run(context.Background(), ex, loaderOf(wasm))
		if err != nil || res.Status != StatusOK || res.CacheHit {
			b.Fatalf("Run(hello variant) = %s hit %v, %v", res.Status, res.CacheHit, err)
		}
		res.Release()
	}
}

func BenchmarkValidate(b *testing.B) {
	for _, name := range []string{"hello", "goprog"} {
		b.Run(name, func(b *testing.B) {
			v := newValidator(b)
			wasm := testdata.Module(name)
			b.SetBytes(int64(len(wasm)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := v.Validate(context.Background(), wasm); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
