package ratelimit

import (
	"context"
	"testing"
)

// BenchmarkAllowRedis measures one decision on the machine's Redis: a
// round trip running redis_rate's script. Limits are high so every call is
// allowed, and keys rotate so no single bucket dominates.
func BenchmarkAllowRedis(b *testing.B) {
	rdb, prefix := machineRedis(b)
	l := New(rdb, nil, newRegistry(), Config{Prefix: prefix})
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
