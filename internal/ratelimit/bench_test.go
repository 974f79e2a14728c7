package ratelimit

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

// BenchmarkAllowRedis measures one decision on the machine's Redis: a
// round trip running redis_rate's script. Limits are high so every call is
// allowed, and keys rotate so no single bucket dominates.
func BenchmarkAllowRedis(b *testing.B) {
	rdb, prefix := machineRedis(b)
	// Generous, as in BenchmarkExecuteRedis.
	l := New(rdb, nil, newRegistry(), Config{Prefix: prefix, CallTimeout: 10 * time.Second})
	keys := benchKeys()
	ctx := context.Background()
	i := 0
	for b.Loop() {
		d, err := l.Allow(ctx, keys[i%len(keys)], 1_000_000)
		if err != nil || d.Local {
			b.Fatalf("Allow = %+v, %v; want decided by Redis", d, err)
		}
		i++
	}
}

// BenchmarkExecuteRedis measures what an execute request costs the limiter
// on the machine's Redis: "two calls" is the old path (Allow in the
// middleware, then AllowExecution), "one call" AllowExecute's one round
// trip; each with go-redis's default client (RESP3, calls guarded by a
// goroutine) and with the api's (RESP2, context deadlines on the socket,
// direct calls). Limits are high so every call is allowed. Besides the
// time per decision, which is mostly waiting for Redis, cpu-ns/op is the
// CPU the process spent (all threads, user and system): what the api pays.
// Leases are off: this measures the round trip (BenchmarkExecuteHotKey
// measures leases).
func BenchmarkExecuteRedis(b *testing.B) {
	const perMinute, perDay = 1_000_000, 1_000_000_000
	for _, c := range clientOptions {
		rdb, prefix := machineRedis(b, c.tune)
		// Generous: a benchmark on a busy machine measures the calls, and
		// one timeout would hand decisions to the fallback.
		l := New(rdb, nil, newRegistry(), Config{Prefix: prefix, CallTimeout: 10 * time.Second, LeaseWindow: -1})
		keys := benchKeys()
		ctx := context.Background()
		b.Run(c.name+"/two calls", func(b *testing.B) {
			cpu := processCPU(b)
			i := 0
			for b.Loop() {
				key := keys[i%len(keys)]
				d, err := l.Allow(ctx, key, perMinute)
				if err != nil || d.Local || !d.Allowed {
					b.Fatalf("Allow = %+v, %v; want allowed by Redis", d, err)
				}
				e, err := l.AllowExecution(ctx, key, perDay)
				if err != nil || e.Local || !e.Allowed {
					b.Fatalf("AllowExecution = %+v, %v; want allowed by Redis", e, err)
				}
				i++
			}
			b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
		})
		b.Run(c.name+"/one call", func(b *testing.B) {
			cpu := processCPU(b)
			i := 0
			for b.Loop() {
				d, e, err := l.AllowExecute(ctx, keys[i%len(keys)], perMinute, perDay)
				if err != nil || d.Local || !d.Allowed || !e.Allowed {
					b.Fatalf("AllowExecute = %+v, %+v, %v; want both allowed by Redis", d, e, err)
				}
				i++
			}
			b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkExecuteHotKey measures AllowExecute on one hot key, as an api
// replica executing thousands of times a second sees it, with leases (the
// default window) and without (LeaseWindow -1: one round trip per
// execute), one goroutine at a time and 16 at once. It runs on a Redis of
// its own so that redis-cpu-ns/op, the CPU redis-server spent per execute
// (INFO cpu), is this benchmark's alone; cpu-ns/op is this process's (the
// api's share), redis-calls/op the round trips per execute. Limits are
// high so every execute is allowed.
func BenchmarkExecuteHotKey(b *testing.B) {
	srv := testenv.StartRedis(b)
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		b.Fatalf("parse %s: %v", srv.URL(), err)
	}
	apiOptions(opt)
	rdb := redis.NewClient(opt)
	b.Cleanup(func() { rdb.Close() })
	// A million a second: an emission interval of 1µs, well above the
	// precision of the TAT's float.
	const perMinute, perDay = 60_000_000, 1_000_000_000_000
	for _, mode := range []struct {
		name   string
		window time.Duration
	}{{"leases", 0}, {"no leases", -1}} {
		for _, parallel := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/c=%d", mode.name, parallel), func(b *testing.B) {
				l := New(rdb, nil, newRegistry(), Config{Prefix: "bench", LeaseWindow: mode.window, CallTimeout: 10 * time.Second})
				defer l.Close()
				key := fmt.Sprintf("hot-%s-%d", mode.name, parallel)
				ctx := context.Background()
				execute := func() {
					req, exec, err := l.AllowExecute(ctx, key, perMinute, perDay)
					if err != nil || req.Local || !req.Allowed || !exec.Allowed {
						b.Fatalf("AllowExecute = %+v, %+v, %v; want both allowed by Redis", req, exec, err)
					}
				}
				for range 1000 { // a key already hot, and a warm pool
					execute()
				}
				calls, cpu, redisCPU := l.executeCalls.Load(), processCPU(b), serverCPU(b, rdb)
				b.ResetTimer()
				if parallel == 1 {
					for range b.N {
						execute()
					}
				} else {
					b.SetParallelism(parallel / runtime.GOMAXPROCS(0))
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							execute()
						}
					})
				}
				b.StopTimer()
				b.ReportMetric(float64(l.executeCalls.Load()-calls)/float64(b.N), "redis-calls/op")
				b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
				b.ReportMetric(float64(serverCPU(b, rdb)-redisCPU)/float64(b.N), "redis-cpu-ns/op")
			})
		}
	}
}

// serverCPU is the CPU time redis-server has used, user and system.
func serverCPU(b *testing.B, rdb *redis.Client) time.Duration {
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatalf("INFO cpu: %v", err)
	}
	var total float64
	for line := range strings.Lines(info) {
		name, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (name == "used_cpu_sys" || name == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu %s: %v", name, err)
			}
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

// processCPU is the CPU time the process has used, all threads.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAllowLocal measures one decision of the local fallback.
func BenchmarkAllowLocal(b *testing.B) {
	l := New(nil, nil, newRegistry(), Config{})
	keys := benchKeys()
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, err := l.Allow(ctx, keys[i%len(keys)], 1_000_000); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func benchKeys() []string {
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = "bench-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	return keys
}
