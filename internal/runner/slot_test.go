package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/tetratelabs/wazero/sys"
)

// Runs one after another on one Runner reuse its run slots (and buffers):
// nothing of a run (arguments, environment, stdin, output, deadline, memory
// state) may show in the next. Each step runs several times so that slots
// dropped by sync.Pool (it drops some on purpose under -race) still leave
// reused ones.
func TestRunSlotIsolation(t *testing.T) {
	r := newRunner(t, Config{})
	run := func(t *testing.T, ctx context.Context, ex Execution, wasm []byte) Result {
		t.Helper()
		res, err := r.Run(ctx, ex, loaderOf(wasm))
		if err != nil {
			t.Fatalf("Run(%s): %v", ex.Name, err)
		}
		t.Cleanup(res.Release)
		return res
	}
	hello, helloWasm := execution("hello")
	for round := 0; round < 5; round++ {
		t.Run(fmt.Sprint("args and env, round ", round), func(t *testing.T) {
			ex, wasm := execution("args_env")
			ex.Args, ex.Env = []string{"SECRET_ARG"}, map[string]string{"SECRET": "env"}
			if res := run(t, context.Background(), ex, wasm); !strings.Contains(string(res.Stdout), "SECRET=env") {
				t.Fatalf("Run(args_env) stdout = %q; want the environment", res.Stdout)
			}
			ex.Args, ex.Env = nil, nil
			if res := run(t, context.Background(), ex, wasm); string(res.Stdout) != "args_env\n" {
				t.Errorf("Run(args_env) after a run with arguments and environment stdout = %q; want %q", res.Stdout, "args_env\n")
			}
		})
		t.Run(fmt.Sprint("stdin and output, round ", round), func(t *testing.T) {
			ex, wasm := execution("echo")
			ex.Stdin = []byte("secret input")
			if res := run(t, context.Background(), ex, wasm); string(res.Stdout) != "secret input" {
				t.Fatalf("Run(echo) stdout = %q; want %q", res.Stdout, "secret input")
			}
			ex.Stdin = nil
			if res := run(t, context.Background(), ex, wasm); len(res.Stdout)+len(res.Stderr) != 0 || res.Truncated {
				t.Errorf("Run(echo) with no stdin after one with = %q, %q, truncated %v; want no output", res.Stdout, res.Stderr, res.Truncated)
			}
			// A truncated run hands back a buffer and a flag: neither sticks.
			flood, floodWasm := execution("stderr_flood")
			flood.MaxOutputBytes = 10
			flood.Timeout = shortTimeout
			if res := run(t, context.Background(), flood, floodWasm); !res.Truncated {
				t.Fatalf("Run(stderr_flood) truncated = false; want true")
			}
			if res := run(t, context.Background(), hello, helloWasm); res.Truncated || string(res.Stdout) != "hello, world\n" || len(res.Stderr) != 0 {
				t.Errorf("Run(hello) after a flood = %q, %q, truncated %v; want only hello", res.Stdout, res.Stderr, res.Truncated)
			}
		})
		t.Run(fmt.Sprint("deadline, round ", round), func(t *testing.T) {
			// The sleep is the slot's: it must wait on the current run's
			// context, not on one that ended.
			ex, wasm := execution("sleep")
			ex.Timeout = shortTimeout
			if res := run(t, context.Background(), ex, wasm); res.Status != StatusTimeout || res.Duration < ex.Timeout {
				t.Fatalf("Run(sleep) = %s after %s; want timeout after %s", res.Status, res.Duration, ex.Timeout)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := r.Run(ctx, ex, loaderOf(wasm)); !errors.Is(err, context.Canceled) {
				t.Fatalf("Run(sleep) canceled = %v; want context.Canceled", err)
			}
			if res := run(t, context.Background(), hello, helloWasm); res.Status != StatusOK {
				t.Errorf("Run(hello) after an ended sleep = %s (%q); want ok", res.Status, res.Error)
			}
		})
		t.Run(fmt.Sprint("memory, round ", round), func(t *testing.T) {
			ex, wasm := execution("membomb")
			ex.MemoryLimitBytes = 8 * mib
			if res := run(t, context.Background(), ex, wasm); res.Status != StatusMemoryLimit {
				t.Fatalf("Run(membomb) = %s; want memory_limit", res.Status)
			}
			res := run(t, context.Background(), hello, helloWasm)
			if res.Status != StatusOK || res.MemoryPeakBytes != pageSize {
				t.Errorf("Run(hello) after a refused grow = %s, peak %d; want ok, one page", res.Status, res.MemoryPeakBytes)
			}
			// A larger limit next is the next run's, not the last one's.
			ex.MemoryLimitBytes = 16 * mib
			if res := run(t, context.Background(), ex, wasm); res.Status != StatusMemoryLimit || res.MemoryPeakBytes < 8*mib {
				t.Errorf("Run(membomb, 16 MiB) = %s, peak %d; want memory_limit past 8 MiB", res.Status, res.MemoryPeakBytes)
			}
		})
	}
}

// A Result's output is its own until released, however many runs follow.
func TestRunResultsDoNotAlias(t *testing.T) {
	r := newRunner(t, Config{})
	ex, wasm := execution("echo")
	echo := func(in string) Result {
		t.Helper()
		ex.Stdin = []byte(in)
		res, err := r.Run(context.Background(), ex, loaderOf(wasm))
		if err != nil || string(res.Stdout) != in {
			t.Fatalf("Run(echo %q) = %q, %v", in, res.Stdout, err)
		}
		return res
	}
	first, second := echo("first"), echo("second")
	first.Release()
	if first.Stdout != nil {
		t.Errorf("Stdout after Release = %q; want nil", first.Stdout)
	}
	for i := 0; i < 20; i++ {
		third := echo(strings.Repeat("x", len("second")))
		if string(second.Stdout) != "second" {
			t.Fatalf("an unreleased Result's stdout = %q after another run; want %q", second.Stdout, "second")
		}
		third.Release()
	}
	second.Release()
}

// Concurrent runs each see only their own arguments, environment and stdin,
// and get only their own output.
func TestRunConcurrentIsolation(t *testing.T) {
	r := newRunner(t, Config{})
	argsEnv, argsEnvWasm := execution("args_env")
	echo, echoWasm := execution("echo")
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < 25; i++ {
				id := fmt.Sprintf("g%d-i%d", g, i)
				ex := argsEnv
				ex.Args, ex.Env = []string{id}, map[string]string{"ID": id}
				res, err := r.Run(context.Background(), ex, loaderOf(argsEnvWasm))
				if want := "args_env\n" + id + "\nID=" + id + "\n"; err != nil || string(res.Stdout) != want {
					t.Errorf("Run(args_env %s) = %q, %v; want %q", id, res.Stdout, err, want)
					return
				}
				res.Release()
				ex = echo
				ex.Stdin = []byte(id)
				res, err = r.Run(context.Background(), ex, loaderOf(echoWasm))
				if err != nil || string(res.Stdout) != id {
					t.Errorf("Run(echo %s) = %q, %v; want %q", id, res.Stdout, err, id)
					return
				}
				res.Release()
			}
		})
	}
	wg.Wait()
}

// An emptied slot holds nothing of its last run, and what wazero could
// still call on it reaches nothing.
func TestRunSlotClear(t *testing.T) {
	var memories memoryPool
	sp := slotPool{base: newRunner(t, Config{}).slots.base}
	s := sp.get()
	stdout, stderr := &cappedWriter{limit: 100}, &cappedWriter{limit: 100}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.fill(ctx, []byte("input"), stdout, stderr, 8*mib, &memories)
	if _, err := s.stdout.Write([]byte("out")); err != nil || string(stdout.buf) != "out" {
		t.Fatalf("filled slot's stdout wrote %q, %v; want %q", stdout.buf, err, "out")
	}
	if b := s.mem.Reallocate(pageSize); len(b) != pageSize {
		t.Fatalf("filled slot's memory Reallocate = %d bytes; want %d", len(b), pageSize)
	}
	s.mem.Free()

	sp.put(s)
	m := s.mem
	if s.stdin.Len() != 0 || s.stdout.w != nil || s.stderr.w != nil || s.ctx != nil ||
		m.buf != nil || m.box != nil || m.pool != nil || m.limit != 0 || m.peak != 0 || m.refused {
		t.Errorf("emptied slot = stdin %d bytes, writers %p %p, ctx %v, memory %+v; want all empty",
			s.stdin.Len(), s.stdout.w, s.stderr.w, s.ctx, m)
	}
	for _, w := range []*slotWriter{&s.stdout, &s.stderr} {
		if n, err := w.Write([]byte("late")); n != 0 || !errors.Is(err, errSlotEmpty) {
			t.Errorf("write to an emptied slot = %d, %v; want 0, errSlotEmpty", n, err)
		}
	}
	if string(stdout.buf) != "out" || len(stderr.buf) != 0 {
		t.Errorf("the last run's output became %q, %q after its slot was emptied", stdout.buf, stderr.buf)
	}
	func() {
		defer func() {
			exit, ok := recover().(*sys.ExitError)
			if !ok || !isContextExit(exit.ExitCode()) {
				t.Errorf("sleep on an emptied slot recovered %v; want a context exit", exit)
			}
		}()
		s.nanosleep(int64(hangBound))
	}()
}
