package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmwiz/wasmwiz/testdata"
)

const (
	mib = 1 << 20
	// shortTimeout is for modules meant to overrun; long for modules meant
	// to finish, generous for a loaded 2-core CI box under -race.
	shortTimeout = 200 * time.Millisecond
	longTimeout  = 20 * time.Second
	// hangBound only catches a run that was not stopped at all.
	hangBound = 10 * time.Second
)

func newRunner(t testing.TB, cfg Config) *Runner {
	t.Helper()
	if cfg.CacheBytes == 0 {
		cfg.CacheBytes = 256 * mib
	}
	r, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

func shaOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func loaderOf(b []byte) Loader {
	return func(context.Context) ([]byte, error) { return b, nil }
}

// execution is a run of a testdata module with roomy limits.
func execution(name string) (Execution, []byte) {
	wasm := testdata.Module(name)
	return Execution{
		SHA256:           shaOf(wasm),
		Name:             name,
		Timeout:          longTimeout,
		MemoryLimitBytes: 64 * mib,
		MaxOutputBytes:   mib,
	}, wasm
}

// variant returns wasm with a custom section appended: a different module
// (and SHA-256) that behaves the same.
func variant(wasm []byte, i int) []byte {
	name := "v" + strconv.Itoa(i)
	out := append([]byte{}, wasm...)
	out = append(out, 0x00, byte(1+len(name)), byte(len(name)))
	return append(out, name...)
}

func TestRun(t *testing.T) {
	r := newRunner(t, Config{})
	tests := []struct {
		module     string
		stdin      string
		memLimit   uint64
		want       Status
		wantCode   uint32
		wantStdout string
		wantStderr string
		wantError  string
	}{
		{module: "hello", want: StatusOK, wantStdout: "hello, world\n"},
		{module: "echo", stdin: "some input\nover lines\n", want: StatusOK, wantStdout: "some input\nover lines\n"},
		{module: "echo", want: StatusOK},
		{module: "stderr", want: StatusOK, wantStderr: "oops\n"},
		{module: "exit3", want: StatusExit, wantCode: 3},
		{module: "unreachable", want: StatusTrap, wantError: "unreachable"},
		{module: "oob", want: StatusTrap, wantError: "out of bounds memory access"},
		{module: "recursion", want: StatusTrap, wantError: "stack overflow"},
		{module: "membomb", memLimit: 16 * mib, want: StatusMemoryLimit, wantError: "memory limit of 16 MiB"},
		{module: "bigmem", want: StatusMemoryLimit, wantError: "declares 2500 MiB of initial memory; the limit is 64 MiB"},
		// No filesystem: fd 3 is not a preopen, and stdin is no directory.
		{module: "files", want: StatusOK, wantStdout: "fd_prestat_get=8\npath_open=8\npath_open_root=63\n"},
		{module: "cpu", want: StatusOK, wantStdout: "2147403606448073\n"},
		{module: "grow_table_max", want: StatusOK, wantStdout: "grown\n"},
	}
	for _, tt := range tests {
		t.Run(tt.module, func(t *testing.T) {
			ex, wasm := execution(tt.module)
			ex.Stdin = []byte(tt.stdin)
			if tt.memLimit != 0 {
				ex.MemoryLimitBytes = tt.memLimit
			}
			res, err := r.Run(context.Background(), ex, loaderOf(wasm))
			if err != nil {
				t.Fatalf("Run(%s) error = %v; want a result", tt.module, err)
			}
			defer res.Release()
			if res.Status != tt.want || res.ExitCode != tt.wantCode {
				t.Errorf("Run(%s) = %s exit %d (%q); want %s exit %d", tt.module, res.Status, res.ExitCode, res.Error, tt.want, tt.wantCode)
			}
			if string(res.Stdout) != tt.wantStdout {
				t.Errorf("Run(%s) stdout = %q; want %q", tt.module, res.Stdout, tt.wantStdout)
			}
			if string(res.Stderr) != tt.wantStderr {
				t.Errorf("Run(%s) stderr = %q; want %q", tt.module, res.Stderr, tt.wantStderr)
			}
			if !strings.Contains(res.Error, tt.wantError) || (tt.wantError == "") != (res.Error == "") {
				t.Errorf("Run(%s) error = %q; want it to contain %q", tt.module, res.Error, tt.wantError)
			}
			if res.Truncated {
				t.Errorf("Run(%s) truncated = true; want false", tt.module)
			}
			if res.MemoryPeakBytes > ex.MemoryLimitBytes {
				t.Errorf("Run(%s) memory peak = %d; over the limit %d", tt.module, res.MemoryPeakBytes, ex.MemoryLimitBytes)
			}
			if tt.module == "bigmem" && (res.MemoryPeakBytes != 0 || res.Duration != 0) {
				t.Errorf("Run(bigmem) peak %d, duration %s; want it refused before instantiation", res.MemoryPeakBytes, res.Duration)
			}
		})
	}
}

func TestRunTrapReasonsAreShort(t *testing.T) {
	r := newRunner(t, Config{})
	for _, name := range []string{"unreachable", "oob", "recursion"} {
		t.Run(name, func(t *testing.T) {
			ex, wasm := execution(name)
			res, err := r.Run(context.Background(), ex, loaderOf(wasm))
			if err != nil {
				t.Fatalf("Run(%s): %v", name, err)
			}
			for _, bad := range []string{"\n", "goroutine", ".go:", "wasm stack trace", "$", "/"} {
				if strings.Contains(res.Error, bad) {
					t.Errorf("Run(%s) error = %q; contains %q", name, res.Error, bad)
				}
			}
		})
	}
}

func TestRunMemoryPeak(t *testing.T) {
	r := newRunner(t, Config{})
	ex, wasm := execution("hello")
	res, err := r.Run(context.Background(), ex, loaderOf(wasm))
	if err != nil {
		t.Fatalf("Run(hello): %v", err)
	}
	if res.MemoryPeakBytes != pageSize {
		t.Errorf("Run(hello) memory peak = %d; want one page (%d)", res.MemoryPeakBytes, pageSize)
	}

	ex, wasm = execution("membomb")
	ex.MemoryLimitBytes = 8 * mib
	res, err = r.Run(context.Background(), ex, loaderOf(wasm))
	if err != nil {
		t.Fatalf("Run(membomb): %v", err)
	}
	// membomb grows 1 MiB at a time from one page: it peaks at 7 MiB + 64 KiB.
	if want := uint64(7*mib + pageSize); res.Status != StatusMemoryLimit || res.MemoryPeakBytes != want {
		t.Errorf("Run(membomb, 8 MiB) = %s, peak %d; want memory_limit, peak %d", res.Status, res.MemoryPeakBytes, want)
	}
}

func TestRunRuntimeMemoryCeiling(t *testing.T) {
	// The runner's own ceiling lowers a larger per-execution limit.
	r := newRunner(t, Config{MaxMemoryLimitBytes: 4 * mib})
	for _, name := range []string{"membomb", "bigmem"} {
		t.Run(name, func(t *testing.T) {
			ex, wasm := execution(name)
			ex.MemoryLimitBytes = 64 * mib
			res, err := r.Run(context.Background(), ex, loaderOf(wasm))
			if err != nil {
				t.Fatalf("Run(%s): %v", name, err)
			}
			if res.Status != StatusMemoryLimit || res.MemoryPeakBytes > 4*mib {
				t.Errorf("Run(%s) = %s, peak %d; want memory_limit within 4 MiB", name, res.Status, res.MemoryPeakBytes)
			}
		})
	}
}

func TestRunTimeout(t *testing.T) {
	r := newRunner(t, Config{})
	tests := []struct {
		module     string
		wantStdout string
	}{
		{module: "loop", wantStdout: "before loop\n"},
		{module: "loop_calls", wantStdout: "before loop\n"},
		{module: "start_loop"},
		{module: "sleep", wantStdout: "sleeping\n"},
	}
	for _, tt := range tests {
		t.Run(tt.module, func(t *testing.T) {
			ex, wasm := execution(tt.module)
			ex.Timeout = shortTimeout
			res, err := r.Run(context.Background(), ex, loaderOf(wasm))
			if err != nil {
				t.Fatalf("Run(%s): %v", tt.module, err)
			}
			if res.Status != StatusTimeout || res.Error == "" {
				t.Errorf("Run(%s) = %s (%q); want timeout with a reason", tt.module, res.Status, res.Error)
			}
			if string(res.Stdout) != tt.wantStdout {
				t.Errorf("Run(%s) stdout = %q; want %q kept", tt.module, res.Stdout, tt.wantStdout)
			}
			if res.Duration < ex.Timeout || res.Duration > hangBound {
				t.Errorf("Run(%s) duration = %s; want at least the limit %s (and no hang)", tt.module, res.Duration, ex.Timeout)
			}
		})
	}
}

func TestRunCallerContext(t *testing.T) {
	r := newRunner(t, Config{})
	ex, wasm := execution("loop")
	ex.Timeout = hangBound

	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := r.Run(ctx, ex, loaderOf(wasm))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run(loop) with a canceled context error = %v; want context.Canceled", err)
		}
	})
	t.Run("caller deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := r.Run(ctx, ex, loaderOf(wasm))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Run(loop) past the caller's deadline error = %v; want context.DeadlineExceeded", err)
		}
	})
	t.Run("already done", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := r.Run(ctx, ex, loaderOf(wasm))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run(loop) with a done context error = %v; want context.Canceled", err)
		}
	})
}

func TestRunOutputCap(t *testing.T) {
	r := newRunner(t, Config{})
	tests := []struct {
		module     string
		timeout    time.Duration
		max        int
		want       Status
		wantStdout int
		wantStderr int
	}{
		{module: "huge_output", timeout: shortTimeout, max: 1000, want: StatusTimeout, wantStdout: 1000},
		{module: "stderr_flood", timeout: shortTimeout, max: 70000, want: StatusTimeout, wantStderr: 70000},
		{module: "hello", timeout: longTimeout, max: 5, want: StatusOK, wantStdout: 5},
	}
	for _, tt := range tests {
		t.Run(tt.module, func(t *testing.T) {
			ex, wasm := execution(tt.module)
			ex.Timeout, ex.MaxOutputBytes = tt.timeout, tt.max
			res, err := r.Run(context.Background(), ex, loaderOf(wasm))
			if err != nil {
				t.Fatalf("Run(%s): %v", tt.module, err)
			}
			defer res.Release()
			if res.Status != tt.want || !res.Truncated {
				t.Errorf("Run(%s) = %s, truncated %v; want %s, truncated", tt.module, res.Status, res.Truncated, tt.want)
			}
			if len(res.Stdout) != tt.wantStdout || len(res.Stderr) != tt.wantStderr {
				t.Errorf("Run(%s) kept %d+%d bytes; want %d+%d", tt.module, len(res.Stdout), len(res.Stderr), tt.wantStdout, tt.wantStderr)
			}
		})
	}
}

func TestRunArgsEnv(t *testing.T) {
	r := newRunner(t, Config{})
	ex, wasm := execution("args_env")
	ex.Name = "prog.wasm"
	ex.Args = []string{"--flag", "two words", ""}
	ex.Env = map[string]string{"ZED": "last", "ALPHA": "1", "EMPTY": "", "WITH_EQ": "a=b"}
	res, err := r.Run(context.Background(), ex, loaderOf(wasm))
	if err != nil {
		t.Fatalf("Run(args_env): %v", err)
	}
	want := "prog.wasm\n--flag\ntwo words\n\nALPHA=1\nEMPTY=\nWITH_EQ=a=b\nZED=last\n"
	if res.Status != StatusOK || string(res.Stdout) != want {
		t.Errorf("Run(args_env) = %s, stdout %q; want ok, %q", res.Status, res.Stdout, want)
	}

	// Nothing of the host's environment leaks in.
	t.Setenv("WASMWIZ_HOST_SECRET", "leak")
	ex.Args, ex.Env = nil, nil
	res, err = r.Run(context.Background(), ex, loaderOf(wasm))
	if err != nil {
		t.Fatalf("Run(args_env): %v", err)
	}
	if string(res.Stdout) != "prog.wasm\n" {
		t.Errorf("Run(args_env) with no args or env stdout = %q; want %q", res.Stdout, "prog.wasm\n")
	}
}

func TestRunRealClockAndRandom(t *testing.T) {
	r := newRunner(t, Config{})
	ex, wasm := execution("clock")
	var randoms []string
	for i := 0; i < 2; i++ {
		res, err := r.Run(context.Background(), ex, loaderOf(wasm))
		if err != nil || res.Status != StatusOK {
			t.Fatalf("Run(clock) = %v, %v; want ok", res.Status, err)
		}
		lines := strings.Split(strings.TrimSuffix(string(res.Stdout), "\n"), "\n")
		if len(lines) != 2 {
			t.Fatalf("Run(clock) stdout = %q; want two lines", res.Stdout)
		}
		ns, err := strconv.ParseInt(lines[0], 10, 64)
		if err != nil {
			t.Fatalf("Run(clock) time %q: %v", lines[0], err)
		}
		// wazero's fake clock says 2022; a real one is within a day of now.
		if d := time.Since(time.Unix(0, ns)); d < -24*time.Hour || d > 24*time.Hour {
			t.Errorf("Run(clock) wall clock = %s; want the real time", time.Unix(0, ns).UTC())
		}
		randoms = append(randoms, lines[1])
	}
	if randoms[0] == randoms[1] {
		t.Errorf("Run(clock) twice gave the same random bytes %s; want a real random source", randoms[0])
	}
}

func TestRunPlatformErrors(t *testing.T) {
	r := newRunner(t, Config{})
	loadErr := errors.New("database is down")
	tests := []struct {
		name      string
		module    string
		edit      func(*Execution)
		load      Loader
		wantIs    error
		wantInval string // substring of an *InvalidModuleError
	}{
		{name: "loader fails", module: "hello", load: func(context.Context) ([]byte, error) { return nil, loadErr }, wantIs: loadErr},
		{name: "wrong bytes for the key", module: "hello", load: loaderOf(testdata.Module("stderr")), wantIs: nil},
		{name: "garbage", module: "garbage", wantInval: "not a WebAssembly module"},
		{name: "truncated", module: "truncated", wantInval: "invalid module"},
		{name: "bad import", module: "bad_import", wantInval: `unsupported import "env.do_evil"`},
		{name: "unknown wasi", module: "unknown_wasi", wantInval: `"wasi_snapshot_preview1.sock_open_nonexistent"`},
		{name: "bigtable", module: "bigtable", wantInval: "tables declare 10000000 elements"},
		{name: "grow table", module: "grow_table", wantInval: "table.grow"},
		{name: "no start", module: "no_start", wantIs: ErrNoStart},
		{name: "zero timeout", module: "hello", edit: func(ex *Execution) { ex.Timeout = 0 }, wantIs: ErrInvalidExecution},
		{name: "zero memory", module: "hello", edit: func(ex *Execution) { ex.MemoryLimitBytes = 0 }, wantIs: ErrInvalidExecution},
		{name: "zero output", module: "hello", edit: func(ex *Execution) { ex.MaxOutputBytes = 0 }, wantIs: ErrInvalidExecution},
		{name: "bad sha", module: "hello", edit: func(ex *Execution) { ex.SHA256 = strings.ToUpper(ex.SHA256) }, wantIs: ErrInvalidExecution},
		{name: "env name with =", module: "hello", edit: func(ex *Execution) { ex.Env = map[string]string{"A=B": "c"} }, wantIs: ErrInvalidExecution},
		{name: "empty env name", module: "hello", edit: func(ex *Execution) { ex.Env = map[string]string{"": "c"} }, wantIs: ErrInvalidExecution},
		{name: "NUL in arg", module: "hello", edit: func(ex *Execution) { ex.Args = []string{"a\x00b"} }, wantIs: ErrInvalidExecution},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ex, wasm := execution(tt.module)
			if tt.edit != nil {
				tt.edit(&ex)
			}
			load := tt.load
			if load == nil {
				load = loaderOf(wasm)
			}
			res, err := r.Run(context.Background(), ex, load)
			if err == nil {
				t.Fatalf("Run(%s) = %s; want an error", tt.module, res.Status)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Run(%s) error = %v; want %v", tt.module, err, tt.wantIs)
			}
			var inval *InvalidModuleError
			if tt.wantInval != "" && (!errors.As(err, &inval) || !strings.Contains(inval.Reason, tt.wantInval)) {
				t.Errorf("Run(%s) error = %v; want an InvalidModuleError containing %q", tt.module, err, tt.wantInval)
			}
		})
	}
}

func TestRunGoProgram(t *testing.T) {
	r := newRunner(t, Config{})
	tests := []struct {
		stdin      string
		want       Status
		wantStdout string
	}{
		{stdin: "hello", want: StatusOK, wantStdout: "hello from Go on WASI\n"},
		{stdin: "shout this\n", want: StatusOK, wantStdout: "SHOUT THIS\n"},
		{stdin: "oom", want: StatusMemoryLimit},
	}
	for i, tt := range tests {
		t.Run(strings.TrimSpace(tt.stdin), func(t *testing.T) {
			ex, wasm := execution("goprog")
			ex.Stdin = []byte(tt.stdin)
			res, err := r.Run(context.Background(), ex, loaderOf(wasm))
			if err != nil {
				t.Fatalf("Run(goprog, %q): %v", tt.stdin, err)
			}
			if res.Status != tt.want {
				t.Fatalf("Run(goprog, %q) = %s exit %d (%q), stderr %.200q; want %s", tt.stdin, res.Status, res.ExitCode, res.Error, res.Stderr, tt.want)
			}
			if tt.wantStdout != "" && string(res.Stdout) != tt.wantStdout {
				t.Errorf("Run(goprog, %q) stdout = %q; want %q", tt.stdin, res.Stdout, tt.wantStdout)
			}
			if res.CacheHit != (i > 0) {
				t.Errorf("Run(goprog) #%d cache hit = %v; want %v", i+1, res.CacheHit, i > 0)
			}
			if res.MemoryPeakBytes > ex.MemoryLimitBytes {
				t.Errorf("Run(goprog, %q) memory peak %d over the limit %d", tt.stdin, res.MemoryPeakBytes, ex.MemoryLimitBytes)
			}
		})
	}
}

func TestRunCacheHitsAndEvictions(t *testing.T) {
	hello := testdata.Module("hello")
	// Room for two hello variants, not three.
	r := newRunner(t, Config{CacheBytes: 2 * estimatedSize(len(variant(hello, 0)))})
	run := func(i int) Result {
		t.Helper()
		wasm := variant(hello, i)
		ex, _ := execution("hello")
		ex.SHA256 = shaOf(wasm)
		res, err := r.Run(context.Background(), ex, loaderOf(wasm))
		if err != nil || res.Status != StatusOK {
			t.Fatalf("Run(hello variant %d) = %s, %v; want ok", i, res.Status, err)
		}
		return res
	}
	steps := []struct {
		variant int
		wantHit bool
	}{
		{0, false}, {0, true}, {1, false}, {0, true}, {2, false}, // evicts 1, the least recently used
		{0, true}, {1, false},
	}
	for i, s := range steps {
		if got := run(s.variant).CacheHit; got != s.wantHit {
			t.Errorf("step %d: Run(variant %d) cache hit = %v; want %v", i, s.variant, got, s.wantHit)
		}
	}
	st := r.CacheStats()
	want := CacheStats{Hits: 3, Misses: 4, Compiles: 4, Evictions: 2, Entries: 2}
	st.Bytes = 0
	if st != want {
		t.Errorf("CacheStats = %+v; want %+v", st, want)
	}
}

func TestRunConcurrentMissesCompileOnce(t *testing.T) {
	r := newRunner(t, Config{})
	ex, wasm := execution("hello")
	gate := make(chan struct{})
	var loads atomic.Int32
	load := func(ctx context.Context) ([]byte, error) {
		loads.Add(1)
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return wasm, nil
	}
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := r.Run(context.Background(), ex, load)
			if err == nil && res.Status != StatusOK {
				err = fmt.Errorf("status %s", res.Status)
			}
			errs <- err
		}()
	}
	eventually(t, hangBound, func() bool { return r.CacheStats().Misses == n })
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Run(hello) concurrently: %v", err)
		}
	}
	if got := loads.Load(); got != 1 {
		t.Errorf("%d concurrent misses loaded the module %d times; want 1", n, got)
	}
	if st := r.CacheStats(); st.Compiles != 1 {
		t.Errorf("%d concurrent misses compiled %d times; want 1", n, st.Compiles)
	}
}

// TestRunCacheHammer runs many goroutines over more modules than the cache
// holds, so that entries are evicted while runs use them. Run it with -race.
func TestRunCacheHammer(t *testing.T) {
	hello := testdata.Module("hello")
	const modules, goroutines, runs = 5, 8, 40
	r := newRunner(t, Config{CacheBytes: 2 * estimatedSize(len(variant(hello, 0)))})
	wasms := make([][]byte, modules)
	for i := range wasms {
		wasms[i] = variant(hello, i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < runs; i++ {
				wasm := wasms[(g+i*3)%modules]
				ex, _ := execution("hello")
				ex.SHA256 = shaOf(wasm)
				res, err := r.Run(context.Background(), ex, loaderOf(wasm))
				if err == nil && (res.Status != StatusOK || string(res.Stdout) != "hello, world\n") {
					err = fmt.Errorf("status %s, stdout %q", res.Status, res.Stdout)
				}
				res.Release()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Run(hello variant) in the hammer: %v", err)
	}
	st := r.CacheStats()
	if st.Hits+st.Misses != goroutines*runs || st.Entries > 2 || st.Evictions == 0 {
		t.Errorf("CacheStats after the hammer = %+v; want %d lookups, at most 2 entries, some evictions", st, goroutines*runs)
	}
}

func TestCompilationCacheDir(t *testing.T) {
	dir := t.TempDir()
	ex, wasm := execution("hello")
	for i := 0; i < 2; i++ {
		r, err := New(context.Background(), Config{CacheBytes: 64 * mib, CompilationCacheDir: dir})
		if err != nil {
			t.Fatalf("New with a compilation cache: %v", err)
		}
		res, err := r.Run(context.Background(), ex, loaderOf(wasm))
		if err != nil || res.Status != StatusOK || string(res.Stdout) != "hello, world\n" {
			t.Errorf("Run(hello) with a compilation cache, runner %d = %s %q, %v; want ok", i+1, res.Status, res.Stdout, err)
		}
		if err := r.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	files := 0
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files++
		}
		return err
	})
	if err != nil || files == 0 {
		t.Errorf("compilation cache dir holds %d files (%v); want the compiled module", files, err)
	}
}

func TestRunAfterClose(t *testing.T) {
	r, err := New(context.Background(), Config{CacheBytes: mib})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ex, wasm := execution("hello")
	if _, err := r.Run(context.Background(), ex, loaderOf(wasm)); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close error = %v; want ErrClosed", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{{CacheBytes: 0}, {CacheBytes: mib, MaxMemoryLimitBytes: 100}} {
		if r, err := New(context.Background(), cfg); err == nil {
			_ = r.Close(context.Background())
			t.Errorf("New(%+v) error = nil; want an error", cfg)
		}
	}
}

func TestTrapReason(t *testing.T) {
	tests := []struct{ msg, want string }{
		{"wasm error: unreachable\nwasm stack trace:\n\t.$0()", "unreachable"},
		{"start function[0] failed: wasm error: out of bounds memory access\nwasm stack trace:", "out of bounds memory access"},
		{"stack overflow", "stack overflow"},
		{"module[x] function[_start] failed: stack overflow", "stack overflow"},
		{"boom (recovered by wazero)\nwasm stack trace:\n\t/home/x/y.go:12", "trap"},
	}
	for _, tt := range tests {
		if got := trapReason(errors.New(tt.msg)); got != tt.want {
			t.Errorf("trapReason(%q) = %q; want %q", tt.msg, got, tt.want)
		}
	}
}

func TestCappedWriter(t *testing.T) {
	w := &cappedWriter{limit: 5}
	for _, p := range []string{"abc", "def", "", "ghi"} {
		if n, err := w.Write([]byte(p)); n != len(p) || err != nil {
			t.Errorf("Write(%q) = %d, %v; want %d, nil", p, n, err, len(p))
		}
	}
	if string(w.buf) != "abcde" || !w.truncated {
		t.Errorf("after writes: %q truncated %v; want %q truncated", w.buf, w.truncated, "abcde")
	}
}

// eventually waits until cond holds, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestMemoryPool(t *testing.T) {
	var p memoryPool
	classes := []struct {
		n    uint64
		want int
	}{
		{0, 0}, {1, 0}, {pageSize, 0}, {pageSize + 1, 1}, {2 * pageSize, 1}, {3 * pageSize, 2},
		{maxPooledMemory, memoryClasses - 1}, {maxPooledMemory + 1, -1},
	}
	for _, c := range classes {
		if got := memoryClass(c.n); got != c.want {
			t.Errorf("memoryClass(%d) = %d; want %d", c.n, got, c.want)
		}
	}
	// A recycled buffer comes back zeroed, whatever the guest left in it.
	for i := 0; i < 100; i++ {
		m := &linearMemory{limit: 64 * mib, max: 64 * mib, pool: &p}
		b := m.Reallocate(pageSize)
		for j, v := range b {
			if v != 0 {
				t.Fatalf("round %d: fresh memory byte %d = %d; want 0", i, j, v)
			}
		}
		for j := range b {
			b[j] = 0xAA
		}
		b = m.Reallocate(3 * pageSize) // grows into another class
		if b[0] != 0xAA || b[2*pageSize] != 0 {
			t.Fatalf("round %d: grown memory lost its contents or is dirty", i)
		}
		for j := range b {
			b[j] = 0xBB
		}
		m.Free()
	}
}
