package runner

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/wasmwiz/wasmwiz/testdata"
)

func newValidator(t testing.TB, opts ...ValidatorOption) *Validator {
	t.Helper()
	v, err := NewValidator(context.Background(), opts...)
	if err != nil {
		t.Fatalf("NewValidator: %v", err)
	}
	t.Cleanup(func() {
		if err := v.Close(context.Background()); err != nil {
			t.Errorf("Validator.Close: %v", err)
		}
	})
	return v
}

// memoryMinModule is a module whose only section declares a memory of min
// pages (as a 5-byte LEB128, so any uint32 fits).
func memoryMinModule(min uint32) []byte {
	b := []byte("\x00asm\x01\x00\x00\x00")
	b = append(b, secMemory, 7, 1, 0x00)
	for i := 0; i < 5; i++ {
		c := byte(min>>(7*i)) & 0x7f
		if i < 4 {
			c |= 0x80
		}
		b = append(b, c)
	}
	return b
}

func TestValidate(t *testing.T) {
	v := newValidator(t)
	wasi := func(names ...string) []string {
		out := []string{}
		for _, n := range names {
			out = append(out, "wasi_snapshot_preview1."+n)
		}
		return out
	}
	tests := []struct {
		name        string
		wasm        []byte
		wantExports []string
		wantImports []string
		wantWASI    bool
		wantReason  string // "" for a valid module
	}{
		{name: "hello", wantExports: []string{"memory", "_start"}, wantImports: wasi("fd_write"), wantWASI: true},
		{name: "unreachable", wantExports: []string{"memory", "_start"}, wantImports: []string{}},
		{name: "no_start", wantExports: []string{"memory", "add"}, wantImports: []string{}},
		{name: "bigmem", wantExports: []string{"memory", "_start"}, wantImports: []string{}},
		{name: "grow_table_max", wantExports: []string{"memory", "_start"}, wantImports: wasi("fd_write"), wantWASI: true},
		{name: "args_env", wantExports: []string{"memory", "_start"},
			wantImports: wasi("fd_write", "args_sizes_get", "args_get", "environ_sizes_get", "environ_get", "proc_exit"), wantWASI: true},
		{name: "bad_import", wantReason: `unsupported import "env.do_evil": only WASI preview 1 functions are provided`},
		{name: "unknown_wasi", wantReason: `unsupported import "wasi_snapshot_preview1.sock_open_nonexistent": not a WASI preview 1 function`},
		{name: "import_memory", wantReason: `unsupported import "env.memory": memory imports are not allowed`},
		{name: "bad_signature", wantReason: `import "wasi_snapshot_preview1.fd_write" has signature (i32) -> (); WASI preview 1 defines (i32,i32,i32,i32) -> (i32)`},
		{name: "bigtable", wantReason: "tables declare 10000000 elements; the limit is 1000000"},
		{name: "grow_table", wantReason: "table 0 has no maximum size and may be grown with table.grow"},
		{name: "garbage", wantReason: "not a WebAssembly module (bad magic number)"},
		{name: "truncated", wantReason: "invalid module: "},
		{name: "empty", wasm: []byte{}, wantReason: "not a WebAssembly module (bad magic number)"},
		{name: "header only", wasm: []byte("\x00asm\x01\x00\x00\x00"), wantImports: []string{}, wantExports: []string{}},
		{name: "wrong version", wasm: []byte("\x00asm\x02\x00\x00\x00"), wantReason: "invalid module: "},
		{name: "memory min over 4 GiB", wasm: memoryMinModule(70000), wantReason: "invalid module: "},
		{name: "memory min at 4 GiB", wasm: memoryMinModule(65536), wantImports: []string{}, wantExports: []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wasm := tt.wasm
			if wasm == nil {
				wasm = testdata.Module(tt.name)
			}
			info, err := v.Validate(context.Background(), wasm)
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("Validate(%s) error = %v; want valid", tt.name, err)
				}
				if !slices.Equal(info.Exports, tt.wantExports) || !slices.Equal(info.Imports, tt.wantImports) || info.WASI != tt.wantWASI {
					t.Errorf("Validate(%s) = %+v; want exports %q, imports %q, WASI %v", tt.name, info, tt.wantExports, tt.wantImports, tt.wantWASI)
				}
				return
			}
			var inval *InvalidModuleError
			if !errors.As(err, &inval) {
				t.Fatalf("Validate(%s) error = %v; want an InvalidModuleError", tt.name, err)
			}
			if !strings.HasPrefix(inval.Reason, tt.wantReason) {
				t.Errorf("Validate(%s) reason = %q; want it to start %q", tt.name, inval.Reason, tt.wantReason)
			}
			if strings.ContainsAny(inval.Reason, "\n") || len(inval.Reason) > maxReasonLen+50 {
				t.Errorf("Validate(%s) reason = %q; want one short line", tt.name, inval.Reason)
			}
		})
	}
}

func TestValidateGoProgram(t *testing.T) {
	v := newValidator(t)
	info, err := v.Validate(context.Background(), testdata.Module("goprog"))
	if err != nil {
		t.Fatalf("Validate(goprog) error = %v; want valid", err)
	}
	if !info.WASI || !slices.Contains(info.Exports, "_start") || !slices.Contains(info.Exports, "memory") {
		t.Errorf("Validate(goprog) = WASI %v, exports %q; want WASI with _start and memory", info.WASI, info.Exports)
	}
	for _, imp := range info.Imports {
		if !strings.HasPrefix(imp, "wasi_snapshot_preview1.") {
			t.Errorf("Validate(goprog) import %q; want only WASI", imp)
		}
	}
}

// TestValidateEveryTestModule pins that validation ends in a verdict for
// every module of testdata, never in an error of the validator's own.
func TestValidateEveryTestModule(t *testing.T) {
	v := newValidator(t)
	for _, name := range testdata.Names() {
		_, err := v.Validate(context.Background(), testdata.Module(name))
		var inval *InvalidModuleError
		if err != nil && !errors.As(err, &inval) {
			t.Errorf("Validate(%s) error = %v; want nil or an InvalidModuleError", name, err)
		}
	}
}

func TestParseModuleFindsTableGrow(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"grow_table", true}, {"grow_table_max", true}, {"hello", false}, {"goprog", false}, {"cpu", false},
	}
	for _, tt := range tests {
		f, err := parseModule(testdata.Module(tt.name))
		if err != nil {
			t.Fatalf("parseModule(%s): %v", tt.name, err)
		}
		if f.codeUnknown {
			t.Errorf("parseModule(%s) met an unknown instruction; want every instruction known", tt.name)
		}
		if got := f.grownTables[0]; got != tt.want {
			t.Errorf("parseModule(%s) grows table 0 = %v; want %v", tt.name, got, tt.want)
		}
	}
}

// maxFuzzSeed leaves the large modules (goprog, many_funcs) out of
// FuzzValidate's seeds: mutating a megabyte is slow and finds nothing the
// small modules do not, and one validation of it under a fuzzing build on a
// busy machine can pass the 10 s after which Go's fuzzer kills its worker
// (without a reproducer: the input was a seed).
const maxFuzzSeed = 64 << 10

// FuzzValidate feeds the validator mutated modules: it must never panic and
// always answer valid or *InvalidModuleError.
func FuzzValidate(f *testing.F) {
	for _, name := range testdata.Names() {
		if wasm := testdata.Module(name); len(wasm) <= maxFuzzSeed {
			f.Add(wasm)
		}
	}
	f.Add(memoryMinModule(70000))
	v := newValidator(f)
	f.Fuzz(func(t *testing.T, wasm []byte) {
		_, err := v.Validate(context.Background(), wasm)
		var inval *InvalidModuleError
		if err != nil && !errors.As(err, &inval) {
			t.Fatalf("Validate error = %v; want nil or an InvalidModuleError", err)
		}
		if err == nil {
			if _, perr := parseModule(wasm); perr != nil {
				t.Fatalf("Validate accepted a module parseModule rejects: %v", perr)
			}
		}
	})
}

// section encodes a section with a one-byte size (content under 128 bytes).
func section(id byte, content ...byte) []byte {
	return append([]byte{id, byte(len(content))}, content...)
}

func module(sections ...[]byte) []byte {
	b := []byte("\x00asm\x01\x00\x00\x00")
	for _, s := range sections {
		b = append(b, s...)
	}
	return b
}

// TestValidateRefusesHugeCounts: wazero's decoder sizes slices from declared
// counts, so each of these tiny modules would make it allocate gigabytes.
func TestValidateRefusesHugeCounts(t *testing.T) {
	v := newValidator(t)
	maxU32 := []byte{0xff, 0xff, 0xff, 0xff, 0x0f}
	voidType := section(secType, 1, 0x60, 0, 0)
	oneFunc := section(secFunction, 1, 0)
	tests := []struct {
		name       string
		wasm       []byte
		wantReason string
	}{
		{"parameters", module(section(secType, append([]byte{1, 0x60}, maxU32...)...)), "4294967295 parameters; the limit is 1000"},
		{"types", module(section(secType, maxU32...)), "4294967295 types; the limit is 1000000"},
		{"imports", module(section(secImport, 0xa0, 0x8d, 0x06)), "100000 imports declared, but the section has only 0 bytes left"},
		{"locals", module(voidType, oneFunc, section(secCode, append(append([]byte{1, 8, 1}, maxU32...), 0x7f, 0x0b)...)), "a function declares 4294967295 locals; the limit is 50000"},
		{"data bytes", module(section(secData, append([]byte{1, 1}, maxU32...)...)), "unexpected end"},
		{"element segments", module(section(secElement, maxU32...)), "element segments; the limit is"},
		{"function names", module(section(secCustom, append([]byte{4, 'n', 'a', 'm', 'e', 1, 5}, maxU32...)...)), "function names; the limit is 1000000"},
		{"module name", module(section(secCustom, append([]byte{4, 'n', 'a', 'm', 'e', 0, 5}, maxU32...)...)), "unexpected end"},
		{"custom section size", append(module(), 0, 0xff, 0xff, 0xff, 0xff, 0x0f), "unexpected end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Validate(context.Background(), tt.wasm)
			var inval *InvalidModuleError
			if !errors.As(err, &inval) || !strings.Contains(inval.Reason, tt.wantReason) {
				t.Errorf("Validate(huge %s) error = %v; want an InvalidModuleError containing %q", tt.name, err, tt.wantReason)
			}
		})
	}
}
