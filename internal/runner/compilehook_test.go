package runner

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// OnCompile is told of each compilation and of nothing else: a cache hit
// compiles nothing.
func TestOnCompile(t *testing.T) {
	var calls atomic.Int64
	var total atomic.Int64
	r := newRunner(t, Config{OnCompile: func(d time.Duration) {
		calls.Add(1)
		total.Add(int64(d))
	}})
	for i, name := range []string{"hello", "hello", "echo"} {
		ex, wasm := execution(name)
		res, err := r.Run(context.Background(), ex, loaderOf(wasm))
		if err != nil || res.Status != StatusOK {
			t.Fatalf("Run %d (%s) = %v, %v; want ok", i, name, res.Status, err)
		}
		res.Release()
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("OnCompile called %d times for hello, hello, echo; want 2 (one per module)", got)
	}
	if total.Load() <= 0 {
		t.Errorf("OnCompile durations sum to %v; want positive", time.Duration(total.Load()))
	}
	if s := r.CacheStats(); s.Compiles != 2 {
		t.Errorf("CacheStats().Compiles = %d; want 2, as OnCompile saw", s.Compiles)
	}
}
