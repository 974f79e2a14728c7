package runner

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
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
// against 1–1.7 s for the 2.6 MB Go program). Its transient memory is not
// smaller: about 160 times a function body's size, hence maxBodySize.
//
// At most GOMAXPROCS validations run at once: each is CPU-bound, and its
// transient memory is tens of times the module's size (65 MB for a 2.6 MB
// Go program), so running more only multiplies memory.
type Validator struct {
	rt   wazero.Runtime
	wasi map[string]api.FunctionDefinition
	sem  chan struct{}
}

// NewValidator makes a Validator; Close releases it.
func NewValidator(ctx context.Context) (*Validator, error) {
	cfg := wazero.NewRuntimeConfigInterpreter().
		WithMemoryLimitPages(MaxMemoryPages).
		WithDebugInfoEnabled(false)
	rt := wazero.NewRuntimeWithConfig(ctx, cfg)
	wasi, err := instantiateWASI(ctx, rt)
	if err != nil {
		_ = rt.Close(ctx)
		return nil, err
	}
	return &Validator{rt: rt, wasi: wasi, sem: make(chan struct{}, runtime.GOMAXPROCS(0))}, nil
}

// Close releases the validator's runtime.
func (v *Validator) Close(ctx context.Context) error {
	return v.rt.Close(ctx)
}

// Validate compiles wasm and applies the platform's rules. A module that
// breaks them gives an *InvalidModuleError; the only other error is ctx's,
// when it ends while waiting for a turn.
func (v *Validator) Validate(ctx context.Context, wasm []byte) (info ModuleInfo, err error) {
	select {
	case v.sem <- struct{}{}:
		defer func() { <-v.sem }()
	case <-ctx.Done():
		return ModuleInfo{}, ctx.Err()
	}
	defer func() {
		// wazero is well fuzzed, but the api process must survive a
		// compiler bug triggered by a hostile upload.
		if p := recover(); p != nil {
			info, err = ModuleInfo{}, invalidf("module could not be compiled")
		}
	}()
	facts, compiled, err := compileChecked(ctx, v.rt, v.wasi, wasm)
	if err != nil {
		return ModuleInfo{}, err
	}
	_ = compiled.Close(ctx)
	return facts.info(), nil
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
	compiled, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		return nil, nil, compileError(err)
	}
	if err := checkModule(compiled, facts, wasi); err != nil {
		_ = compiled.Close(ctx)
		return nil, nil, err
	}
	return facts, compiled, nil
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
