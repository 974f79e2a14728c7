package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"golang.org/x/sync/semaphore"
)

// Limits of what a module may declare. wazero's memory cap does not cover
// tables at all (each element is a machine word of host memory), so the
// platform bounds them itself.
const (
	// MaxTableElements bounds the elements all of a module's tables may
	// ever hold together: 1,000,000 elements are 8 MB of host memory.
	MaxTableElements = 1_000_000
	// MaxMemoryPages is the WebAssembly limit of a 32-bit memory (4 GiB);
	// a module declaring a larger minimum cannot run anywhere.
	MaxMemoryPages = 65536

	pageSize = 65536
	// maxReasonLen keeps compiler messages short enough for an API answer.
	maxReasonLen = 300
)

// ModuleInfo is what validation learns about a module.
type ModuleInfo struct {
	Exports []string // every export name, in declaration order
	WASI    bool     // imports anything from wasi_snapshot_preview1
	Imports []string // "module.name", in declaration order
}

// InvalidModuleError says why a module cannot be accepted. Its Reason is
// written for the module's author: no file paths and no internals.
type InvalidModuleError struct{ Reason string }

func (e *InvalidModuleError) Error() string { return e.Reason }

func invalidf(format string, args ...any) *InvalidModuleError {
	return &InvalidModuleError{Reason: fmt.Sprintf(format, args...)}
}

// Validator checks uploaded modules without running them. It compiles with
// wazero's interpreter engine: decoding and validation are the same as the
// workers' compiler engine and, for typical modules, much faster (90 ms
// against 1–1.7 s for the 2.6 MB Go program).
//
// Its memory is not small: the interpreter keeps every function it has
// lowered until the module is closed, so a validation holds about 90 bytes
// per instruction and 300 per function, more for some other items (see
// validationCost), or 200 MiB for a real 10 MiB Go program. Neither
// CompileModule nor the decoder before it looks at its context, so a
// validation cannot be stopped once begun. Its memory is bounded up front
// instead: before compiling, Validate estimates the heap the module's
// validation will hold from what parseModule counted, refuses a module
// whose estimate is over the budget, and waits until its estimate fits in
// what other validations leave of the budget. At most GOMAXPROCS
// validations run at once besides: each is CPU-bound.
type Validator struct {
	rt      wazero.Runtime
	wasi    map[string]api.FunctionDefinition
	budget  int64
	maxWait time.Duration
	mem     *semaphore.Weighted // bytes of the budget
	cpu     chan struct{}
}

// Defaults of a Validator.
const (
	// DefaultValidationBudget is the heap all of a Validator's validations
	// may hold together, and so the most one module's may. A real 10 MiB Go
	// program is estimated at about 330 MiB (and holds about 210).
	DefaultValidationBudget = 384 << 20
	// DefaultValidationWait bounds how long Validate waits for its turn: a
	// validation at the whole budget takes 2–4 s of one core.
	DefaultValidationWait = 10 * time.Second
)

// ValidatorOption configures a Validator.
type ValidatorOption func(*Validator)

// WithValidationBudget sets the heap, in bytes, that validations may hold
// together (DefaultValidationBudget when not given). A module whose
// validation alone would need more is refused.
func WithValidationBudget(bytes int64) ValidatorOption {
	return func(v *Validator) { v.budget = bytes }
}

// WithValidationWait sets how long Validate waits for its share of the
// budget and a CPU before it gives up (DefaultValidationWait when not given).
func WithValidationWait(d time.Duration) ValidatorOption {
	return func(v *Validator) { v.maxWait = d }
}

// NewValidator makes a Validator; Close releases it.
func NewValidator(ctx context.Context, opts ...ValidatorOption) (*Validator, error) {
	v := &Validator{
		budget:  DefaultValidationBudget,
		maxWait: DefaultValidationWait,
		cpu:     make(chan struct{}, runtime.GOMAXPROCS(0)),
	}
	for _, o := range opts {
		o(v)
	}
	if v.budget < validationCostBase {
		return nil, fmt.Errorf("validation budget %d bytes is below the %d of the smallest module", v.budget, validationCostBase)
	}
	if v.maxWait <= 0 {
		return nil, fmt.Errorf("validation wait %v: want a positive duration", v.maxWait)
	}
	v.mem = semaphore.NewWeighted(v.budget)
	cfg := wazero.NewRuntimeConfigInterpreter().
		WithMemoryLimitPages(MaxMemoryPages).
		WithDebugInfoEnabled(false)
	v.rt = wazero.NewRuntimeWithConfig(ctx, cfg)
	wasi, err := instantiateWASI(ctx, v.rt)
	if err != nil {
		_ = v.rt.Close(ctx)
		return nil, err
	}
	v.wasi = wasi
	return v, nil
}

// Close releases the validator's runtime.
func (v *Validator) Close(ctx context.Context) error {
	return v.rt.Close(ctx)
}

// Validate compiles wasm and applies the platform's rules. A module that
// breaks them, or whose validation would need more than the budget, gives
// an *InvalidModuleError. The only other errors come from waiting for a
// turn: ctx's when it ends, or one wrapping context.DeadlineExceeded when
// the wait passes the Validator's limit (the validations ahead hold the
// budget; the caller may try again shortly).
func (v *Validator) Validate(ctx context.Context, wasm []byte) (info ModuleInfo, err error) {
	defer func() {
		// wazero and parseModule are well fuzzed, but the api process must
		// survive a bug triggered by a hostile upload.
		if p := recover(); p != nil {
			info, err = ModuleInfo{}, invalidf("module could not be compiled")
		}
	}()
	// Read first: wazero's decoder must not see counts that would make it
	// allocate out of proportion to the module (see wasmbin.go), and the
	// counts give the cost.
	facts, err := parseModule(wasm)
	if err != nil {
		return ModuleInfo{}, parseError(err)
	}
	cost := facts.validationCost()
	if cost.total > v.budget {
		return ModuleInfo{}, cost.refusal(v.budget)
	}
	release, err := v.admit(ctx, cost.total)
	if err != nil {
		return ModuleInfo{}, err
	}
	defer release()
	compiled, err := compileParsed(ctx, v.rt, v.wasi, wasm, facts)
	if err != nil {
		return ModuleInfo{}, err
	}
	_ = compiled.Close(ctx)
	return facts.info(), nil
}

// admit waits until cost fits in what other validations leave of the
// budget and a CPU is free, for at most maxWait; release gives both back.
// Waiters are served in order, so a large module is not starved by a
// stream of small ones.
func (v *Validator) admit(ctx context.Context, cost int64) (release func(), err error) {
	wctx, cancel := context.WithTimeout(ctx, v.maxWait)
	defer cancel()
	if err := v.mem.Acquire(wctx, cost); err != nil {
		return nil, v.waitError(ctx, err)
	}
	select {
	case v.cpu <- struct{}{}:
	case <-wctx.Done():
		v.mem.Release(cost)
		return nil, v.waitError(ctx, wctx.Err())
	}
	return func() {
		<-v.cpu
		v.mem.Release(cost)
	}, nil
}

func (v *Validator) waitError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("validate: waited %v for other validations to finish: %w", v.maxWait, err)
}

// What validating one item of each kind holds on the heap at the peak, in
// bytes: measured with wazero 1.12's interpreter on modules made of little
// else (TestValidationCostBoundsMemory makes them at a small scale; the
// full-size figures, with 10 MiB modules, were the same per item), plus 10
// to 30%. Real modules are mostly functions and instructions: a Go program
// has about 3 bytes of code per instruction, so its estimate is about 30
// times its size, and it holds about 20 times.
const (
	validationCostBase  = 2 << 20
	costPerFunction     = 300 // its code, its definition and its lowered form, empty
	costPerInstruction  = 96  // one or two lowered operations of 56 bytes, labels
	costPerLargestInstr = 160 // the lowering of the largest body, transient
	costPerLocal        = 80
	costPerType         = 352
	costPerParam        = 32 // of a type, result or parameter
	costPerImport       = 640
	costPerGlobal       = 176
	costPerTable        = 256 // or memory
	costPerExport       = 128
	costPerElemSegment  = 128
	costPerElement      = 72
	costPerDataSegment  = 64
	costPerDataByte     = 2
	costPerName         = 48 // of the name section
)

// moduleCost is validationCost's answer: the total and what makes it up.
type moduleCost struct {
	total int64
	parts []costPart
}

type costPart struct {
	what  string
	count uint64
	bytes int64
}

// validationCost estimates the heap, in bytes, that validating the module
// holds at its peak. The counts are those of a module no larger than the
// upload limit, so the products fit an int64 with room to spare.
func (f *moduleFacts) validationCost() moduleCost {
	c := moduleCost{total: validationCostBase}
	add := func(what string, count uint64, weight int64) {
		b := int64(count) * weight
		c.total += b
		if b > 0 && what != "" {
			c.parts = append(c.parts, costPart{what, count, b})
		}
	}
	// A function section and a code section of different lengths are
	// invalid, but wazero decodes both before it says so.
	add("functions", uint64(max(f.functions, f.bodies)), costPerFunction)
	add("instructions", f.instrs, costPerInstruction)
	add("instructions in the largest function", f.maxInstrs, costPerLargestInstr)
	add("locals", f.locals, costPerLocal)
	add("types", f.types, costPerType)
	add("type parameters and results", f.params, costPerParam)
	// wazero names each type by appending its parameters one at a time:
	// garbage, not held, but quadratic in their number (a type of 1000
	// parameters makes 1.5 MB of it), and time. Half a byte a square is
	// charged, so that a module of many such types is refused rather than
	// taking tens of seconds.
	add("", f.paramSquares/2, 1)
	add("imports", uint64(len(f.imports)), costPerImport)
	add("globals", f.globals, costPerGlobal)
	add("tables and memories", uint64(len(f.tables)+len(f.memories)), costPerTable)
	add("exports", uint64(len(f.exports)), costPerExport)
	add("element segments", f.elemSegments, costPerElemSegment)
	add("elements", f.elements, costPerElement)
	add("data segments", f.dataSegments, costPerDataSegment)
	add("data bytes", f.dataBytes, costPerDataByte)
	add("names", f.names, costPerName)
	return c
}

// refusal explains to the module's author why it is refused: the total and
// the counts that make up most of it.
func (c moduleCost) refusal(budget int64) *InvalidModuleError {
	parts := slices.Clone(c.parts)
	slices.SortFunc(parts, func(a, b costPart) int { return cmp.Compare(b.bytes, a.bytes) })
	var named []string
	for _, p := range parts {
		if len(named) == 3 || p.bytes < c.total/10 {
			break
		}
		named = append(named, fmt.Sprintf("%d %s", p.count, p.what))
	}
	if len(named) == 0 {
		named = append(named, "its declarations")
	}
	return invalidf("module too complex to validate: about %d MiB of memory for %s; the limit is %d MiB",
		(c.total+1<<20-1)>>20, strings.Join(named, ", "), budget>>20)
}

func (f *moduleFacts) info() ModuleInfo {
	info := ModuleInfo{Exports: f.exports, Imports: make([]string, 0, len(f.imports))}
	if info.Exports == nil {
		info.Exports = []string{}
	}
	for _, imp := range f.imports {
		info.Imports = append(info.Imports, imp.module+"."+imp.name)
		if imp.module == wasi_snapshot_preview1.ModuleName {
			info.WASI = true
		}
	}
	return info
}

// instantiateWASI adds WASI preview 1, the only host module, to rt and
// returns its functions by name.
func instantiateWASI(ctx context.Context, rt wazero.Runtime) (map[string]api.FunctionDefinition, error) {
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		return nil, fmt.Errorf("instantiate WASI: %w", err)
	}
	mod := rt.Module(wasi_snapshot_preview1.ModuleName)
	if mod == nil {
		return nil, errors.New("instantiate WASI: module missing after instantiation")
	}
	return mod.ExportedFunctionDefinitions(), nil
}

// compileChecked reads, compiles and checks wasm. On success the caller
// owns the CompiledModule.
func compileChecked(ctx context.Context, rt wazero.Runtime, wasi map[string]api.FunctionDefinition, wasm []byte) (*moduleFacts, wazero.CompiledModule, error) {
	// Read first: wazero's decoder must not see counts that would make it
	// allocate out of proportion to the module (see wasmbin.go).
	facts, err := parseModule(wasm)
	if err != nil {
		return nil, nil, parseError(err)
	}
	compiled, err := compileParsed(ctx, rt, wasi, wasm, facts)
	if err != nil {
		return nil, nil, err
	}
	return facts, compiled, nil
}

// compileParsed compiles and checks wasm, which parseModule read as facts.
func compileParsed(ctx context.Context, rt wazero.Runtime, wasi map[string]api.FunctionDefinition, wasm []byte, facts *moduleFacts) (wazero.CompiledModule, error) {
	compiled, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		return nil, compileError(err)
	}
	if err := checkModule(compiled, facts, wasi); err != nil {
		_ = compiled.Close(ctx)
		return nil, err
	}
	return compiled, nil
}

func parseError(err error) *InvalidModuleError {
	msg := strings.TrimPrefix(err.Error(), errMalformed.Error()+": ")
	if strings.HasPrefix(msg, "not a WebAssembly binary") {
		return invalidf("not a WebAssembly module (bad magic number)")
	}
	if strings.HasSuffix(msg, "unexpected end") {
		msg += " (truncated?)"
	}
	return invalidf("invalid module: %s", msg)
}

// compileError turns a wazero compile error into a reason for the author.
func compileError(err error) *InvalidModuleError {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if len(msg) > maxReasonLen {
		msg = msg[:maxReasonLen] + "…"
	}
	return invalidf("invalid module: %s", msg)
}

// checkModule applies the rules wazero does not: only WASI preview 1
// functions may be imported, and tables and memories must fit the bounds.
func checkModule(compiled wazero.CompiledModule, f *moduleFacts, wasi map[string]api.FunctionDefinition) error {
	funcs := compiled.ImportedFunctions()
	fi := 0
	for _, imp := range f.imports {
		full := imp.module + "." + imp.name
		switch {
		case imp.kind == kindMemory:
			return invalidf("unsupported import %q: memory imports are not allowed; a module defines its own memory", full)
		case imp.kind != kindFunc:
			return invalidf("unsupported import %q: only WASI preview 1 functions are provided", full)
		case imp.module != wasi_snapshot_preview1.ModuleName:
			return invalidf("unsupported import %q: only WASI preview 1 functions are provided", full)
		}
		host, ok := wasi[imp.name]
		if !ok {
			return invalidf("unsupported import %q: not a WASI preview 1 function", full)
		}
		if fi >= len(funcs) {
			return invalidf("invalid module: import %q not found", full)
		}
		got := funcs[fi]
		fi++
		if !sameTypes(got.ParamTypes(), host.ParamTypes()) || !sameTypes(got.ResultTypes(), host.ResultTypes()) {
			return invalidf("import %q has signature %s; WASI preview 1 defines %s",
				full, signature(got), signature(host))
		}
	}

	var total uint64
	for i, t := range f.tables {
		idx := f.importedTables + uint32(i)
		size := t.min
		if f.codeUnknown || f.grownTables[idx] {
			if !t.hasMax {
				return invalidf("table %d has no maximum size and may be grown with table.grow; declare a maximum of at most %d elements", idx, MaxTableElements)
			}
			size = t.max
		}
		total += size
		if total > MaxTableElements {
			return invalidf("tables declare %d elements; the limit is %d", total, MaxTableElements)
		}
	}
	for _, m := range f.memories {
		if m.min > MaxMemoryPages {
			return invalidf("memory declares a minimum of %d pages; the limit is %d (4 GiB)", m.min, MaxMemoryPages)
		}
	}
	return nil
}

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func signature(f api.FunctionDefinition) string {
	var b strings.Builder
	writeTypes := func(ts []api.ValueType) {
		b.WriteByte('(')
		for i, t := range ts {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(api.ValueTypeName(t))
		}
		b.WriteByte(')')
	}
	writeTypes(f.ParamTypes())
	b.WriteString(" -> ")
	writeTypes(f.ResultTypes())
	return b.String()
}
