package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/runner"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

// recordingObserver keeps what the worker told it.
type recordingObserver struct {
	mu        sync.Mutex
	executed  []string // statuses
	failed    []string // codes
	forwarded int
	durations []time.Duration
	peaks     []uint64
}

func (o *recordingObserver) Executed(status string, duration, _ time.Duration, peak uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.executed = append(o.executed, status)
	o.durations = append(o.durations, duration)
	o.peaks = append(o.peaks, peak)
}

func (o *recordingObserver) Failed(code string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failed = append(o.failed, code)
}

func (o *recordingObserver) Forwarded() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.forwarded++
}

// The observer learns each outcome before the reply leaves, so that a
// client holding an answer finds it counted.
func TestObserver(t *testing.T) {
	h := newHarness(t)
	obs := &recordingObserver{}
	exec := execFunc(func(ctx context.Context, ex runner.Execution, load runner.Loader) (runner.Result, error) {
		switch string(ex.Stdin) {
		case "trap":
			return runner.Result{Status: runner.StatusTrap, Error: "unreachable", Duration: time.Millisecond, MemoryPeakBytes: 65536}, nil
		case "missing":
			_, err := load(ctx)
			return runner.Result{}, fmt.Errorf("load: %w", err)
		case "broken":
			return runner.Result{}, errors.New("broken")
		}
		return runner.Result{Status: runner.StatusOK, Duration: 2 * time.Millisecond, MemoryPeakBytes: 131072}, nil
	})
	h.start(t, exec, workerOpts{cfg: func(c *Config) { c.Observer = obs }})

	tests := []struct {
		stdin    string
		executed []string
		failed   []string
	}{
		{"ok", []string{"ok"}, nil},
		{"trap", []string{"ok", "trap"}, nil},
		{"missing", []string{"ok", "trap"}, []string{string(protocol.FailureModuleNotFound)}},
		{"broken", []string{"ok", "trap"}, []string{string(protocol.FailureModuleNotFound), string(protocol.FailureInternal)}},
	}
	for _, tt := range tests {
		req := request(anySHA)
		req.Stdin = []byte(tt.stdin)
		if _, err := h.client.Execute(ctxTimeout(t, 10*time.Second), req); err != nil {
			t.Fatalf("Execute(%s) error = %v", tt.stdin, err)
		}
		obs.mu.Lock()
		executed, failed := fmt.Sprint(obs.executed), fmt.Sprint(obs.failed)
		obs.mu.Unlock()
		if executed != fmt.Sprint(tt.executed) || failed != fmt.Sprint(tt.failed) {
			t.Errorf("after Execute(%s): executed %s, failed %s; want %v, %v", tt.stdin, executed, failed, tt.executed, tt.failed)
		}
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if fmt.Sprint(obs.durations) != "[2ms 1ms]" || fmt.Sprint(obs.peaks) != "[131072 65536]" {
		t.Errorf("observed durations %v, peaks %v; want [2ms 1ms], [131072 65536]", obs.durations, obs.peaks)
	}
}

// A worker whose slots are all taken forwards a request (to itself, the
// only member here, up to maxForwards times) and says so each time.
func TestObserverForwarded(t *testing.T) {
	h := newHarness(t)
	obs := &recordingObserver{}
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	exec := execFunc(func(ctx context.Context, ex runner.Execution, _ runner.Loader) (runner.Result, error) {
		started <- struct{}{}
		if string(ex.Stdin) == "hold" {
			<-release
		}
		return runner.Result{Status: runner.StatusOK}, nil
	})
	h.start(t, exec, workerOpts{concurrency: 1, cfg: func(c *Config) { c.Observer = obs }})

	errc := make(chan error, 2)
	for _, stdin := range []string{"hold", "next"} {
		req := request(anySHA)
		req.Stdin = []byte(stdin)
		go func() {
			_, err := h.client.Execute(ctxTimeout(t, 10*time.Second), req)
			errc <- err
		}()
		if stdin == "hold" {
			<-started // the slot is taken before the second request is sent
		}
	}
	testenv.Eventually(t, 5*time.Second, fmt.Sprintf("%d forwards with the only slot taken", maxForwards), func() bool {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		return obs.forwarded == maxForwards
	})
	close(release)
	for range 2 {
		if err := <-errc; err != nil {
			t.Errorf("Execute error = %v", err)
		}
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.forwarded != maxForwards || len(obs.executed) != 2 {
		t.Errorf("forwarded %d, executed %v; want %d forwards and both executed", obs.forwarded, obs.executed, maxForwards)
	}
}
