// Package runner executes one WebAssembly module under limits. It knows
// nothing of NATS or HTTP.
//
// A Runner owns one wazero runtime with WASI preview 1 as its only host
// module, and an LRU of compiled modules keyed by SHA-256. Each Run gets a
// fresh instance with its own deadline, memory ceiling and capped output.
// A Validator checks uploads with the same rules without running anything.
package runner

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
)

// Status is how an execution ended.
type Status string

// The statuses of API.md's execution answer.
const (
	StatusOK          Status = "ok"           // _start returned, or proc_exit(0)
	StatusExit        Status = "exit"         // proc_exit with non-zero code
	StatusTrap        Status = "trap"         // unreachable, out of bounds, stack overflow... Result.Error says which
	StatusTimeout     Status = "timeout"      // ran past its time limit; output so far kept
	StatusMemoryLimit Status = "memory_limit" // needed more linear memory than its limit
)

var (
	// ErrNoStart: the module exports no _start() function, so it is not a
	// WASI command and cannot be run.
	ErrNoStart = errors.New("module has no _start function")
	// ErrInvalidExecution: the Execution itself is unusable (a missing
	// limit, a bad environment variable name...); a caller's bug, not the
	// module's.
	ErrInvalidExecution = errors.New("invalid execution")
	// ErrClosed: the Runner was closed.
	ErrClosed = errors.New("runner closed")
)

// MaxEnvVars bounds Execution.Env: wazero copies its environment table for
// each variable added, so the cost of setting up a run grows with the
// square of their number.
const MaxEnvVars = 1024

// Config configures a Runner.
type Config struct {
	CacheBytes          int64  // MODULE_CACHE_BYTES: LRU bound for compiled modules
	CompilationCacheDir string // wazero on-disk compilation cache; "" disables it
	// MaxMemoryLimitBytes is the largest memory limit any execution may
	// have (the server's MEMORY_LIMIT). It becomes the runtime-wide page
	// limit, a fence behind the per-execution one, and larger
	// Execution.MemoryLimitBytes are lowered to it. 0 means 4 GiB, the
	// WebAssembly maximum.
	MaxMemoryLimitBytes uint64
	// OnCompile, when set, is told how long each compilation took (not the
	// load before it), for metrics. It is called from many goroutines.
	OnCompile func(time.Duration)
}

// Loader returns a module's bytes on a compile-cache miss (the worker
// fetches from PostgreSQL).
type Loader func(ctx context.Context) ([]byte, error)

// Execution is one run of one module.
type Execution struct {
	SHA256           string            // hex; the compile-cache key
	Name             string            // argv[0]
	Stdin            []byte            // read by the guest, never written
	Args             []string          // argv[1:]
	Env              map[string]string // the whole environment
	Timeout          time.Duration
	MemoryLimitBytes uint64
	MaxOutputBytes   int // cap for stdout and for stderr, each
}

// Result is what the guest did.
type Result struct {
	Status          Status
	ExitCode        uint32
	Stdout, Stderr  []byte
	Truncated       bool          // stdout or stderr hit MaxOutputBytes
	Error           string        // human reason for trap / timeout / memory_limit, "" for ok
	Duration        time.Duration // from module start to end
	MemoryPeakBytes uint64
	CacheHit        bool // compiled module came from the in-memory cache

	stdout, stderr *cappedWriter
	pool           *outputPool
}

// Release hands Stdout and Stderr back to the Runner for reuse; they must
// not be used afterwards. Calling it is optional (unreleased buffers are
// garbage collected) and it must be called at most once per Run.
func (res *Result) Release() {
	if res.pool != nil {
		res.pool.put(res.stdout)
		res.pool.put(res.stderr)
	}
	res.Stdout, res.Stderr, res.stdout, res.stderr, res.pool = nil, nil, nil, nil, nil
}

// Runner runs modules. It is safe for concurrent use.
type Runner struct {
	rt        wazero.Runtime
	diskCache wazero.CompilationCache // nil without CompilationCacheDir
	wasi      map[string]api.FunctionDefinition
	maxMemory uint64 // bytes, a whole number of pages
	cache     *moduleCache
	outputs   outputPool
	memories  memoryPool
	slots     slotPool
	closed    atomic.Bool
	onCompile func(time.Duration) // never nil
}

// program is a cache entry's payload.
type program struct {
	compiled wazero.CompiledModule // nil when the module can never run here
	minPages uint64                // declared initial memory
	noStart  error                 // set (and compiled nil) when there is no usable _start
}

// Size estimate of a cached module. Measured with wazero v1.12's compiler
// on amd64 (testdata/goprog.wasm, 2.6 MB): 2.1 MB of Go heap for the
// decoded module plus 9.9 MB of machine code, 4.6 times the wasm size.
// Small modules cost a few KiB of heap and a whole page of code at least.
const (
	compiledSizeFactor = 5
	entryOverhead      = 16 << 10
)

// runtimePageLimit is wazero's runtime-wide page limit: a second fence, in
// case a run ever went without its linearMemory, well below wazero's 4 GiB
// default. It is twice the largest limit rather than the limit itself
// because wazero refuses a grow past it without asking the allocator, and
// a refusal the allocator does not see cannot be reported as memory_limit;
// at twice the limit only a single grow of more than the limit does that.
func runtimePageLimit(maxMemory uint64) uint32 {
	return uint32(min(2*maxMemory/pageSize, MaxMemoryPages))
}

// New makes a Runner; Close releases it.
func New(ctx context.Context, cfg Config) (*Runner, error) {
	if cfg.CacheBytes <= 0 {
		return nil, fmt.Errorf("runner: CacheBytes must be positive, got %d", cfg.CacheBytes)
	}
	maxMemory := cfg.MaxMemoryLimitBytes
	if maxMemory == 0 || maxMemory > MaxMemoryPages*pageSize {
		maxMemory = MaxMemoryPages * pageSize
	}
	maxMemory -= maxMemory % pageSize
	if maxMemory == 0 {
		return nil, fmt.Errorf("runner: MaxMemoryLimitBytes %d is less than one 64 KiB page", cfg.MaxMemoryLimitBytes)
	}

	rc := wazero.NewRuntimeConfig().
		// Guests get no fuel: closing the module when its context ends is
		// what bounds their CPU time.
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(runtimePageLimit(maxMemory)).
		// DWARF only improves stack traces, which guests never see.
		WithDebugInfoEnabled(false)
	r := &Runner{maxMemory: maxMemory, onCompile: cfg.OnCompile}
	if r.onCompile == nil {
		r.onCompile = func(time.Duration) {}
	}
	if cfg.CompilationCacheDir != "" {
		dc, err := wazero.NewCompilationCacheWithDir(cfg.CompilationCacheDir)
		if err != nil {
			return nil, fmt.Errorf("runner: compilation cache: %w", err)
		}
		r.diskCache = dc
		rc = rc.WithCompilationCache(dc)
	}
	r.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	wasi, err := instantiateWASI(ctx, r.rt)
	if err != nil {
		_ = r.Close(ctx)
		return nil, fmt.Errorf("runner: %w", err)
	}
	r.wasi = wasi
	// wazero's defaults suit a library, not a platform: its clocks are fake
	// and its random source deterministic. The sleep is each run slot's,
	// so that it ends with the run's deadline.
	r.slots.base = wazero.NewModuleConfig().
		WithName("").         // anonymous: instances of one module may run at once
		WithStartFunctions(). // _start is called by execute, after instantiation
		WithSysWalltime().
		WithSysNanotime().
		WithRandSource(rand.Reader)
	r.cache = newModuleCache(cfg.CacheBytes, func(p *program) {
		if p.compiled != nil {
			_ = p.compiled.Close(context.Background())
		}
	})
	return r, nil
}

// Close stops every run still going and releases the runtime and caches.
func (r *Runner) Close(ctx context.Context) error {
	if r.closed.Swap(true) {
		return nil
	}
	if r.cache != nil {
		r.cache.clear()
	}
	err := r.rt.Close(ctx)
	if r.diskCache != nil {
		err = errors.Join(err, r.diskCache.Close(ctx))
	}
	return err
}

// CacheStats reports the compiled-module cache's counters.
func (r *Runner) CacheStats() CacheStats { return r.cache.snapshot() }

// Run executes ex. It returns an error only for platform failures (the
// loader failed, the module does not compile or breaks the platform's
// rules, no _start: ErrNoStart, ctx ended); whatever the guest does is a
// Result. When ctx ends during the run, Run returns ctx's error, not a
// timeout: the caller gave up, the module did not overrun.
func (r *Runner) Run(ctx context.Context, ex Execution, load Loader) (Result, error) {
	if r.closed.Load() {
		return Result{}, ErrClosed
	}
	if err := checkExecution(&ex); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	// The closure captures sha, not ex: it outlives the call (a shared
	// compilation may), and capturing ex would move all of it to the heap
	// on every run, hits included.
	sha := ex.SHA256
	e, hit, err := r.cache.acquire(ctx, sha, func(lctx context.Context) (*program, int64, error) {
		return r.compile(lctx, sha, load)
	})
	if err != nil {
		return Result{}, err
	}
	defer r.cache.release(e)
	p := e.prog
	if p.noStart != nil {
		return Result{}, p.noStart
	}

	limit := min(ex.MemoryLimitBytes, r.maxMemory)
	if p.minPages*pageSize > limit {
		// Instantiating would allocate it all before the first instruction.
		return Result{
			Status:   StatusMemoryLimit,
			Error:    fmt.Sprintf("module declares %s of initial memory; the limit is %s", humanBytes(p.minPages*pageSize), humanBytes(limit)),
			CacheHit: hit,
		}, nil
	}
	res, err := r.execute(ctx, p.compiled, &ex, limit)
	res.CacheHit = hit
	if err == nil && r.closed.Load() {
		// Close ends every instance as if it had exited 0.
		res.Release()
		return Result{}, ErrClosed
	}
	return res, err
}

func checkExecution(ex *Execution) error {
	switch {
	case len(ex.SHA256) != 64 || strings.Trim(ex.SHA256, "0123456789abcdef") != "":
		return fmt.Errorf("%w: SHA256 must be 64 lower-case hex digits", ErrInvalidExecution)
	case ex.Timeout <= 0:
		return fmt.Errorf("%w: Timeout must be positive", ErrInvalidExecution)
	case ex.MemoryLimitBytes == 0:
		return fmt.Errorf("%w: MemoryLimitBytes must be positive", ErrInvalidExecution)
	case ex.MaxOutputBytes <= 0:
		return fmt.Errorf("%w: MaxOutputBytes must be positive", ErrInvalidExecution)
	case len(ex.Env) > MaxEnvVars:
		return fmt.Errorf("%w: %d environment variables; the limit is %d", ErrInvalidExecution, len(ex.Env), MaxEnvVars)
	}
	// WASI passes C strings: NUL cannot be represented, and '=' separates
	// a variable's name from its value.
	if strings.IndexByte(ex.Name, 0) >= 0 {
		return fmt.Errorf("%w: Name contains NUL", ErrInvalidExecution)
	}
	for i, a := range ex.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("%w: argument %d contains NUL", ErrInvalidExecution, i+1)
		}
	}
	for k, v := range ex.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("%w: environment variable %q: names must be non-empty without '=' or NUL, values without NUL", ErrInvalidExecution, k)
		}
	}
	return nil
}

// compile loads, checks and compiles a module for the cache.
func (r *Runner) compile(ctx context.Context, sha string, load Loader) (*program, int64, error) {
	wasm, err := load(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("load module %s: %w", sha, err)
	}
	// The key is trusted by every later run: a loader answering with other
	// bytes must not poison it.
	if sum := sha256.Sum256(wasm); hex.EncodeToString(sum[:]) != sha {
		return nil, 0, fmt.Errorf("load module %s: bytes have SHA-256 %x", sha, sum)
	}
	if facts, err := parseModule(wasm); err == nil {
		for _, m := range facts.memories {
			if m.min > uint64(runtimePageLimit(r.maxMemory)) {
				// wazero would refuse to compile it, and no run here could
				// give it that much memory anyway.
				return &program{minPages: m.min}, entryOverhead, nil
			}
		}
	}
	began := time.Now()
	facts, compiled, err := compileChecked(ctx, r.rt, r.wasi, wasm)
	r.onCompile(time.Since(began))
	if err != nil {
		return nil, 0, fmt.Errorf("compile module %s: %w", sha, err)
	}
	p := &program{compiled: compiled}
	for _, m := range facts.memories {
		p.minPages = m.min
	}
	if start, ok := compiled.ExportedFunctions()["_start"]; !ok {
		p.noStart = ErrNoStart
	} else if len(start.ParamTypes())+len(start.ResultTypes()) > 0 {
		p.noStart = fmt.Errorf("%w: _start must take no parameters and return nothing", ErrNoStart)
	}
	if p.noStart != nil {
		_ = compiled.Close(ctx)
		p.compiled = nil
		return p, entryOverhead, nil
	}
	return p, estimatedSize(len(wasm)), nil
}

func estimatedSize(wasmLen int) int64 {
	return int64(wasmLen)*compiledSizeFactor + entryOverhead
}

// execute instantiates compiled afresh and runs its _start.
func (r *Runner) execute(ctx context.Context, compiled wazero.CompiledModule, ex *Execution, limit uint64) (Result, error) {
	stdout, stderr := r.outputs.get(ex.MaxOutputBytes), r.outputs.get(ex.MaxOutputBytes)
	res := Result{stdout: stdout, stderr: stderr, pool: &r.outputs}

	argv := make([]string, 0, 1+len(ex.Args))
	argv = append(append(argv, ex.Name), ex.Args...)
	slot := r.slots.get()
	// WithArgs copies the slot's config: the instance gets its own, and the
	// slot's stays as it was.
	cfg := slot.cfg.WithArgs(argv...)
	if len(ex.Env) > 0 {
		keys := make([]string, 0, len(ex.Env))
		for k := range ex.Env {
			keys = append(keys, k)
		}
		slices.Sort(keys) // a stable environ order, whatever the map's
		for _, k := range keys {
			cfg = cfg.WithEnv(k, ex.Env[k])
		}
	}

	// Started before the deadline is set, so a timed-out run's Duration is
	// never below its Timeout.
	start := time.Now()
	runCtx, cancel := context.WithTimeout(experimental.WithMemoryAllocator(ctx, &slot.mem), ex.Timeout)
	defer cancel()
	slot.fill(runCtx, ex.Stdin, stdout, stderr, limit, &r.memories)
	err := r.start(runCtx, compiled, cfg)
	res.Duration = time.Since(start)
	mem := slot.mem // copied: putting the slot back empties it
	_, panicked := errors.AsType[*hostPanic](err)
	if !panicked {
		// A panic may have left the instance open, still using the slot.
		r.slots.put(slot)
	}

	res.Stdout, res.Stderr = stdout.buf, stderr.buf
	res.Truncated = stdout.truncated || stderr.truncated
	res.MemoryPeakBytes = mem.peak

	exit, _ := errors.AsType[*sys.ExitError](err)
	switch {
	case err == nil:
		res.Status = StatusOK
	case exit != nil && isContextExit(exit.ExitCode()) && runCtx.Err() != nil:
		if cerr := ctx.Err(); cerr != nil {
			res.Release()
			return Result{}, fmt.Errorf("run module %s: %w", ex.SHA256, cerr)
		}
		res.Status = StatusTimeout
		res.Error = fmt.Sprintf("execution exceeded its time limit of %s", ex.Timeout)
	case exit != nil && exit.ExitCode() == 0:
		res.Status = StatusOK
	case mem.refused:
		// A refused grow is seen by the guest as an ordinary failure; what
		// it does next (abort, exit 2, trap) is a consequence of the limit.
		res.Status = StatusMemoryLimit
		res.Error = fmt.Sprintf("module needed more than its memory limit of %s", humanBytes(limit))
		if exit != nil {
			res.ExitCode = exit.ExitCode()
		}
	case exit != nil:
		res.Status = StatusExit
		res.ExitCode = exit.ExitCode()
	default:
		if panicked {
			res.Release()
			return Result{}, fmt.Errorf("run module %s: %w", ex.SHA256, err)
		}
		res.Status = StatusTrap
		res.Error = trapReason(err)
	}
	return res, nil
}

func isContextExit(code uint32) bool {
	return code == sys.ExitCodeDeadlineExceeded || code == sys.ExitCodeContextCanceled
}

// start instantiates (running the module's start function, if any) and
// calls _start.
func (r *Runner) start(ctx context.Context, compiled wazero.CompiledModule, cfg wazero.ModuleConfig) (err error) {
	defer func() {
		// Panics inside guest calls are recovered by wazero; one escaping
		// here is wazero's own bug and must not take the worker down.
		if p := recover(); p != nil {
			err = &hostPanic{p}
		}
	}()
	mod, err := r.rt.InstantiateModule(ctx, compiled, cfg)
	if err != nil {
		return err
	}
	defer mod.Close(ctx)
	_, err = mod.ExportedFunction("_start").Call(ctx)
	return err
}

type hostPanic struct{ v any }

func (p *hostPanic) Error() string { return fmt.Sprintf("internal error: %v", p.v) }

// trapReasons are wazero's runtime error messages, which are short and name
// the trap the way the WebAssembly spec does.
var trapReasons = []string{
	"stack overflow",
	"unreachable",
	"out of bounds memory access",
	"invalid table access",
	"indirect call type mismatch",
	"integer divide by zero",
	"integer overflow",
	"invalid conversion to integer",
	"unaligned atomic",
	"expected shared memory",
	"too many waiters",
	"uncaught exception",
	"null reference",
}

// trapReason names a trap without wazero's wasm stack trace, which would
// show the guest's function names and the platform's internals.
func trapReason(err error) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if i := strings.LastIndex(msg, "wasm error: "); i >= 0 {
		msg = msg[i+len("wasm error: "):]
	} else if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	if slices.Contains(trapReasons, msg) {
		return msg
	}
	return "trap"
}

func humanBytes(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
