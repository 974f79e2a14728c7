package runner

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wasmwiz/wasmwiz/testdata"
)

// Modules of one shape each, encoded here, for what validation holds of
// each kind of item.

func appendULEB(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			c |= 0x80
		}
		b = append(b, c)
		if v == 0 {
			return b
		}
	}
}

// wasmSection encodes a section with its size.
func wasmSection(id byte, content []byte) []byte {
	return append(appendULEB([]byte{id}, uint64(len(content))), content...)
}

// wasmVec encodes n copies of item as a vector.
func wasmVec(n int, item []byte) []byte {
	b := appendULEB(nil, uint64(n))
	for range n {
		b = append(b, item...)
	}
	return b
}

// sameFuncs is a module of n functions of type (i32) -> (), each declaring
// locals i32 locals and holding body (without its final end).
func sameFuncs(n, locals int, body []byte) []byte {
	code := []byte{0}
	if locals > 0 {
		code = appendULEB([]byte{1}, uint64(locals))
		code = append(code, 0x7f)
	}
	code = append(append(code, body...), 0x0b)
	return module(
		wasmSection(secType, []byte{1, 0x60, 1, 0x7f, 0}),
		wasmSection(secFunction, wasmVec(n, []byte{0})),
		wasmSection(secCode, wasmVec(n, append(appendULEB(nil, uint64(len(code))), code...))),
	)
}

// oneFunc is the sections of a module with one function () -> (), for
// shapes that need a function to refer to.
func oneFunc() [][]byte {
	return [][]byte{
		wasmSection(secType, []byte{1, 0x60, 0, 0}),
		wasmSection(secFunction, []byte{1, 0}),
	}
}

var emptyBody = wasmSection(secCode, []byte{1, 2, 0, 0x0b})

// costShapes are the calibration shapes, each at a size validated in well
// under a second (the full-size figures are in validationCost's comment).
func costShapes() map[string]func() []byte {
	fdWrite := append(append([]byte{22}, "wasi_snapshot_preview1"...), 8)
	fdWrite = append(append(fdWrite, "fd_write"...), kindFunc, 0)
	namesSub := wasmVec(500_000, []byte{0, 1, 'x'})
	names := append([]byte{4, 'n', 'a', 'm', 'e', 1}, appendULEB(nil, uint64(len(namesSub)))...)
	names = append(names, namesSub...)
	brTable := append([]byte{0x02, 0x40, 0x20, 0, 0x0e}, appendULEB(nil, 100_000)...)
	brTable = append(append(brTable, bytes.Repeat([]byte{0}, 100_001)...), 0x0b)
	data := append([]byte{0, 0x41, 0, 0x0b}, appendULEB(nil, 2<<20)...)
	data = append(data, bytes.Repeat([]byte{7}, 2<<20)...)
	return map[string]func() []byte{
		"functions":       func() []byte { return testdata.ManyFuncs(10_000) },
		"empty functions": func() []byte { return sameFuncs(100_000, 0, nil) },
		"long function":   func() []byte { return testdata.LongFunction(40_000) },
		"stack ops":       func() []byte { return sameFuncs(10, 0, bytes.Repeat([]byte{0x41, 0, 0x1a}, 15_000)) },
		"calls":           func() []byte { return sameFuncs(10, 0, bytes.Repeat([]byte{0x20, 0, 0x10, 0}, 12_000)) },
		"br_table":        func() []byte { return sameFuncs(4, 0, brTable) },
		"locals":          func() []byte { return sameFuncs(10, 50_000, []byte{0x20, 0, 0x1a}) },
		"types":           func() []byte { return module(wasmSection(secType, wasmVec(100_000, []byte{0x60, 0, 0}))) },
		"globals":         func() []byte { return module(wasmSection(secGlobal, wasmVec(200_000, []byte{0x7f, 0, 0x41, 0, 0x0b}))) },
		"imports": func() []byte {
			return module(
				wasmSection(secType, []byte{1, 0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 1, 0x7f}),
				wasmSection(secImport, wasmVec(50_000, fdWrite)),
			)
		},
		"elements": func() []byte {
			return module(append(oneFunc(),
				wasmSection(secElement, append(appendULEB([]byte{1, 1, 0}, 500_000), make([]byte, 500_000)...)),
				emptyBody)...)
		},
		"element expressions": func() []byte {
			return module(append(oneFunc(),
				wasmSection(secElement, append(appendULEB([]byte{1, 5, 0x70}, 200_000), bytes.Repeat([]byte{0xd2, 0, 0x0b}, 200_000)...)),
				emptyBody)...)
		},
		"element segments": func() []byte {
			return module(append(oneFunc(),
				wasmSection(secElement, wasmVec(150_000, []byte{1, 0, 1, 0})),
				emptyBody)...)
		},
		"exports": func() []byte {
			return module(
				wasmSection(secGlobal, []byte{1, 0x7f, 0, 0x41, 0, 0x0b}),
				wasmSection(secExport, exportsOfGlobal(100_000)),
			)
		},
		"tables": func() []byte { return module(wasmSection(secTable, wasmVec(50_000, []byte{0x70, 1, 0, 0}))) },
		"data": func() []byte {
			return module(
				wasmSection(secMemory, []byte{1, 0, 64}),
				wasmSection(secData, append(appendULEB(nil, 10_001), append(bytes.Repeat([]byte{1, 1, 0}, 10_000), data...)...)),
			)
		},
		"names":      func() []byte { return module(append(oneFunc(), emptyBody, wasmSection(secCustom, names))...) },
		"go program": func() []byte { return testdata.Module("goprog") },
	}
}

// exportsOfGlobal exports global 0 n times under distinct names.
func exportsOfGlobal(n int) []byte {
	b := appendULEB(nil, uint64(n))
	for i := range n {
		name := []byte{'e', byte('a' + i%26), byte('a' + i/26%26), byte('a' + i/676%26), byte('a' + i/17576%26)}
		b = append(append(append(b, byte(len(name))), name...), kindGlobal, 0)
	}
	return b
}

// heapPeak runs f and returns the most the heap held live above what it
// held before. It reads the live heap that each garbage collection finds,
// and makes them run often (at every 5% of growth), so that the figure is
// what f keeps alive, not the garbage it leaves between collections (which
// GOMEMLIMIT reclaims in a deployment) and not how far the collector fell
// behind on a busy machine.
func heapPeak(f func()) uint64 {
	defer debug.SetGCPercent(debug.SetGCPercent(5))
	const live = "/gc/heap/live:bytes"
	runtime.GC()
	sample := []metrics.Sample{{Name: live}}
	metrics.Read(sample)
	base := sample[0].Value.Uint64()
	peak := base
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s := []metrics.Sample{{Name: live}}
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
	}()
	f()
	close(done)
	wg.Wait()
	return peak - base
}

// TestValidationCostBoundsMemory measures what validating each shape holds
// and checks that validationCost says at least as much: the estimate is
// what keeps the api within its memory, so an estimate below the truth (a
// new wazero, a new kind of item) must fail here.
func TestValidationCostBoundsMemory(t *testing.T) {
	v := newValidator(t)
	for name, shape := range costShapes() {
		t.Run(name, func(t *testing.T) {
			wasm := shape()
			facts, err := parseModule(wasm)
			if err != nil {
				t.Fatalf("parseModule(%s): %v", name, err)
			}
			est := facts.validationCost().total
			var verr error
			held := heapPeak(func() {
				var c interface{ Close(context.Context) error }
				c, verr = compileParsed(context.Background(), v.rt, v.wasi, wasm, facts)
				if verr == nil {
					_ = c.Close(context.Background())
				}
			})
			if verr != nil {
				t.Fatalf("compile(%s): %v; want a valid module", name, verr)
			}
			t.Logf("%s: %d bytes, held %.1f MiB, estimated %.1f MiB", name, len(wasm), float64(held)/(1<<20), float64(est)/(1<<20))
			if int64(held) > est {
				t.Errorf("validating %s held %.1f MiB at its peak; validationCost estimated %.1f MiB: raise the weights of what it is made of",
					name, float64(held)/(1<<20), float64(est)/(1<<20))
			}
		})
	}
}

// TestValidationCostAdmitsRealPrograms: a Go program as large as the
// default upload limit (MAX_WASM_SIZE, 10 MiB) fits the default budget,
// judged from the estimate per byte of the 2.5 MB one in testdata.
func TestValidationCostAdmitsRealPrograms(t *testing.T) {
	const maxWASMSize = 10 << 20
	wasm := testdata.Module("goprog")
	facts, err := parseModule(wasm)
	if err != nil {
		t.Fatalf("parseModule(goprog): %v", err)
	}
	perByte := float64(facts.validationCost().total) / float64(len(wasm))
	if est := perByte * maxWASMSize; est > DefaultValidationBudget {
		t.Errorf("a %d MiB Go program would be estimated at %.0f MiB; want within DefaultValidationBudget, %d MiB",
			maxWASMSize>>20, est/(1<<20), DefaultValidationBudget>>20)
	}
}

// TestValidateRefusesCostlyModules: valid modules under the upload limit
// whose validation would hold more than the budget are refused before
// wazero sees them, with a reason that names what makes them costly.
func TestValidateRefusesCostlyModules(t *testing.T) {
	v := newValidator(t)
	tests := []struct {
		name       string
		wasm       []byte
		wantReason string
	}{
		// 10.4 MB: held 550 MiB in the api before the budget.
		{"200,000 small functions", testdata.ManyFuncs(200_000), "5400013 instructions"},
		{"9,000,000 elements", module(append(oneFunc(),
			wasmSection(secElement, append(appendULEB([]byte{1, 1, 0}, 9_000_000), make([]byte, 9_000_000)...)),
			emptyBody)...), "9000000 elements"},
		// 10,000 types of 1000 parameters: 15 GB of garbage and 12 s.
		{"types of 1000 parameters", module(wasmSection(secType,
			wasmVec(10_000, append(append([]byte{0x60, 0xe8, 0x07}, bytes.Repeat([]byte{0x7f}, 1000)...), 0)))), "module too complex"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Validate(context.Background(), tt.wasm)
			var inval *InvalidModuleError
			if !errors.As(err, &inval) {
				t.Fatalf("Validate(%s) error = %v; want an InvalidModuleError", tt.name, err)
			}
			want := "module too complex to validate: about "
			if !strings.HasPrefix(inval.Reason, want) || !strings.Contains(inval.Reason, tt.wantReason) ||
				!strings.HasSuffix(inval.Reason, "; the limit is 384 MiB") {
				t.Errorf("Validate(%s) reason = %q; want it to start %q, name %q and end with the limit", tt.name, inval.Reason, want, tt.wantReason)
			}
			if strings.Contains(inval.Reason, "\n") || len(inval.Reason) > maxReasonLen {
				t.Errorf("Validate(%s) reason = %q; want one short line", tt.name, inval.Reason)
			}
		})
	}
}

// TestValidationAdmission: validations share the budget; one that does not
// fit what the others leave waits, up to the Validator's limit, then fails
// with an error wrapping context.DeadlineExceeded (the api's 503), never as
// an invalid module.
func TestValidationAdmission(t *testing.T) {
	const budget = 64 << 20
	v := newValidator(t, WithValidationBudget(budget), WithValidationWait(200*time.Millisecond))
	many := testdata.Module("many_funcs") // estimated at about 60 MiB
	facts, err := parseModule(many)
	if err != nil {
		t.Fatal(err)
	}
	if c := facts.validationCost().total; c < budget/2 || c > budget {
		t.Fatalf("many_funcs is estimated at %d MiB; the test wants between half the budget and the budget", c>>20)
	}
	ctx := context.Background()
	// Another validation holds all but 4 MiB of the budget.
	if err := v.mem.Acquire(ctx, budget-4<<20); err != nil {
		t.Fatal(err)
	}
	_, err = v.Validate(ctx, many)
	var inval *InvalidModuleError
	if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &inval) {
		t.Errorf("Validate(many_funcs) with the budget held = %v; want a wait error wrapping context.DeadlineExceeded", err)
	}
	if _, err := v.Validate(ctx, testdata.Module("hello")); err != nil {
		t.Errorf("Validate(hello) with 4 MiB of the budget left = %v; want valid: it fits", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := v.Validate(cancelled, many); !errors.Is(err, context.Canceled) {
		t.Errorf("Validate(many_funcs) with its context cancelled while waiting = %v; want context.Canceled", err)
	}
	v.mem.Release(budget - 4<<20)
	if _, err := v.Validate(ctx, many); err != nil {
		t.Errorf("Validate(many_funcs) with the budget free = %v; want valid", err)
	}

	// Concurrent validations that together need several times the budget
	// all pass, in turn, and give it back whole.
	patient := newValidator(t, WithValidationBudget(budget), WithValidationWait(time.Minute))
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := patient.Validate(ctx, many)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Validate(many_funcs) = %v; want valid", err)
		}
	}
	if !patient.mem.TryAcquire(budget) {
		t.Errorf("after the validations, the budget is not whole again")
	}
}

func TestNewValidatorRefusesBadOptions(t *testing.T) {
	ctx := context.Background()
	if _, err := NewValidator(ctx, WithValidationBudget(1<<20)); err == nil {
		t.Errorf("NewValidator with a 1 MiB budget succeeded; want an error: no module fits")
	}
	if _, err := NewValidator(ctx, WithValidationWait(0)); err == nil {
		t.Errorf("NewValidator with no wait succeeded; want an error")
	}
}
