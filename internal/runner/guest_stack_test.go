package runner

import (
	"context"
	"testing"
)

// executionStackBudget is what the deployments allow one execution beyond
// its linear memory (deploy/env_test.go executionOverhead, the chart's
// worker.executionOverhead): keep them equal.
const executionStackBudget = 160 * mib

// TestGuestStackMemory measures what a guest recursing without end holds
// outside its linear memory. wazero keeps a guest's call stack on the Go
// heap and doubles it as it deepens, until it passes a fixed ceiling (50 MB,
// not configurable): the last growth copies a 40 MiB stack into an 80 MiB
// one, and then the run traps. MEMORY_LIMIT does not cover it, so the worker
// sizing formula adds executionStackBudget per concurrent execution; this
// fails if a wazero upgrade makes the stack larger than that.
func TestGuestStackMemory(t *testing.T) {
	r := newRunner(t, Config{})
	ex, wasm := execution("recursion")
	warm, err := r.Run(context.Background(), ex, loaderOf(wasm)) // compiled and cached before measuring
	if err != nil || warm.Status != StatusTrap {
		t.Fatalf("Run(recursion) = %v, %v; want a trap", warm.Status, err)
	}
	warm.Release()
	var res Result
	held := heapPeak(func() { res, err = r.Run(context.Background(), ex, loaderOf(wasm)) })
	if err != nil || res.Status != StatusTrap || res.Error != "stack overflow" {
		t.Fatalf("Run(recursion) = %v %q, %v; want a stack overflow trap", res.Status, res.Error, err)
	}
	res.Release()
	t.Logf("a stack overflow held %d MiB of heap beyond the guest's memory", held/mib)
	if held > executionStackBudget {
		t.Errorf("a stack overflow held %d MiB; the deployments allow %d MiB an execution beyond MEMORY_LIMIT: raise executionOverhead in deploy/ and the chart",
			held/mib, executionStackBudget/mib)
	}
	// The other way round: a figure far below what wazero's ceiling implies
	// means the measurement is broken (or wazero bounded its stack, and the
	// deployments can lower executionOverhead).
	if held < 64*mib {
		t.Errorf("a stack overflow held only %d MiB; wazero's stack ceiling implies about 120: is the measurement right?", held/mib)
	}
}
