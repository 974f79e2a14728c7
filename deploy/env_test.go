package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/wasmwiz/wasmwiz/internal/config"
	"github.com/wasmwiz/wasmwiz/internal/runner"
)

// repoRoot is where go.mod lives; go test runs in deploy/.
const repoRoot = ".."

// configNames returns the environment variables the programs read (DESIGN.md
// "Configuration" and API.md "Rate limits"). A deployment file that sets any
// other name carries a typo the programs would silently ignore.
func configNames() map[string]bool {
	names := map[string]bool{}
	for _, n := range []string{
		"DATABASE_URL", "API_SALT", "JWT_SECRET", "JWT_TTL", "ENVIRONMENT",
		"SERVER_HOST", "SERVER_PORT", "LOG_LEVEL", "REDIS_URL", "NATS_URL",
		"NATS_SUBJECT_PREFIX", "MAX_WASM_SIZE", "MAX_INPUT_SIZE", "MAX_OUTPUT_SIZE",
		"EXECUTION_TIMEOUT", "MEMORY_LIMIT", "WORKER_CONCURRENCY", "MODULE_CACHE_BYTES",
		"COMPILATION_CACHE_DIR", "METRICS_PORT", "WORKER_ID", "USAGE_RETENTION",
		"ADHOC_MODULE_TTL", "PPROF_ADDR", "SHUTDOWN_DELAY",
	} {
		names[n] = true
	}
	for _, tier := range []string{"FREE", "BASIC", "PRO"} {
		for _, prefix := range []string{"RATE_LIMIT_", "DAILY_QUOTA_", "MAX_MEMORY_", "MAX_TIME_"} {
			names[prefix+tier] = true
		}
	}
	return names
}

// runtimeNames are the environment variables that the Go runtime itself
// reads, which a deployment may set beside configNames.
var runtimeNames = map[string]bool{"GOMEMLIMIT": true}

// Defaults of the programs that the deployment math depends on.
const (
	defaultMemoryLimit = 128 << 20 // MEMORY_LIMIT
	defaultServerPort  = 8080      // SERVER_PORT
	defaultMetricsPort = 9090      // METRICS_PORT
	// runtimeOverhead is the worker memory beyond the executions and the
	// module cache: Go runtime, I/O buffers, in-flight module bytes. The chart's
	// worker.runtimeOverhead default and the plain manifests use the same figure.
	runtimeOverhead = 128 << 20
	// executionOverhead is what one execution holds beyond its linear memory.
	// Mostly the guest's call stack, which wazero keeps on the Go heap and
	// doubles as it deepens, up to an 80 MiB stack copied out of a 40 MiB one
	// before it traps: a deep recursion held 140 MiB of heap (runner
	// TestGuestStackMemory). The chart's worker.executionOverhead default and
	// the plain manifests use the same figure.
	executionOverhead = 160 << 20
	// apiMemoryFloor is what one api replica needs: the validation budget,
	// which all concurrent upload validations share (runner
	// DefaultValidationBudget), and 256 MiB for the Go runtime and the bodies
	// of requests in flight (MAX_WASM_SIZE each for uploads).
	apiMemoryFloor = runner.DefaultValidationBudget + 256<<20
	// goMemLimitMin and goMemLimitMax bound GOMEMLIMIT as a share of the
	// container's memory limit: high enough that the collector does not run
	// all the time, low enough that it runs before the kernel's OOM killer
	// would (stacks, wazero's compiled code and the runtime's own memory are
	// outside the Go heap).
	goMemLimitMin, goMemLimitMax = 0.80, 0.95
)

// workerMemoryFloor is what one worker replica needs:
// WORKER_CONCURRENCY x (MEMORY_LIMIT + execution overhead) +
// MODULE_CACHE_BYTES + runtime overhead.
func workerMemoryFloor(env map[string]string) (int64, error) {
	mem := int64(defaultMemoryLimit)
	if v, ok := env["MEMORY_LIMIT"]; ok {
		n, err := parseSize(v)
		if err != nil {
			return 0, fmt.Errorf("MEMORY_LIMIT: %w", err)
		}
		mem = n
	}
	v, ok := env["WORKER_CONCURRENCY"]
	if !ok {
		// Its default is GOMAXPROCS, which the deployment cannot know for sure.
		return 0, fmt.Errorf("WORKER_CONCURRENCY is not set: the memory limit cannot be checked against it")
	}
	conc, err := strconv.ParseInt(v, 10, 64)
	if err != nil || conc < 1 {
		return 0, fmt.Errorf("WORKER_CONCURRENCY %q is not a positive integer", v)
	}
	v, ok = env["MODULE_CACHE_BYTES"]
	if !ok {
		return 0, fmt.Errorf("MODULE_CACHE_BYTES is not set: the memory limit cannot be checked against it")
	}
	cache, err := parseSize(v)
	if err != nil {
		return 0, fmt.Errorf("MODULE_CACHE_BYTES: %w", err)
	}
	return conc*(mem+executionOverhead) + cache + runtimeOverhead, nil
}

// goMemLimitRE is GOMEMLIMIT's syntax (runtime/debug.SetMemoryLimit): bytes,
// with an optional B, KiB, MiB, GiB or TiB.
var goMemLimitRE = regexp.MustCompile(`^([0-9]+)(B|KiB|MiB|GiB|TiB)?$`)

// checkGoMemLimit wants GOMEMLIMIT in env, in the Go runtime's syntax,
// between goMemLimitMin and goMemLimitMax of the container's memory limit.
// Without it the Go runtime lets the heap grow to twice what is live before
// it collects, and keeps what a guest's stack or a validation freed: a
// worker could be OOM-killed with every execution on it.
func checkGoMemLimit(t *testing.T, where string, env map[string]string, limit int64) {
	t.Helper()
	v, ok := env["GOMEMLIMIT"]
	if !ok {
		t.Errorf("%s: GOMEMLIMIT is not set; want %.0f%% to %.0f%% of the %d MiB memory limit", where, goMemLimitMin*100, goMemLimitMax*100, limit>>20)
		return
	}
	m := goMemLimitRE.FindStringSubmatch(v)
	if m == nil {
		t.Errorf("%s: GOMEMLIMIT=%q is not in the Go runtime's syntax (an integer with B, KiB, MiB, GiB or TiB)", where, v)
		return
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		t.Errorf("%s: GOMEMLIMIT=%q: %v", where, v, err)
		return
	}
	n <<= map[string]int{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	if share := float64(n) / float64(limit); share < goMemLimitMin || share > goMemLimitMax {
		t.Errorf("%s: GOMEMLIMIT=%s is %.0f%% of the %d MiB memory limit; want %.0f%% to %.0f%%",
			where, v, share*100, limit>>20, goMemLimitMin*100, goMemLimitMax*100)
	}
}

var sizeRE = regexp.MustCompile(`^([0-9]+)\s*([A-Za-z]*)$`)

// parseSize reads bytes, the programs' suffixes (10MiB) or Kubernetes and
// Docker quantities (768Mi, 768M, 1g).
func parseSize(s string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("size %q: want an integer with an optional unit", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	factors := map[string]int64{
		"": 1, "b": 1,
		"k": 1000, "kb": 1000, "ki": 1 << 10, "kib": 1 << 10,
		"m": 1000 * 1000, "mb": 1000 * 1000, "mi": 1 << 20, "mib": 1 << 20,
		"g": 1000 * 1000 * 1000, "gb": 1000 * 1000 * 1000, "gi": 1 << 30, "gib": 1 << 30,
	}
	unit := strings.ToLower(m[2])
	f, ok := factors[unit]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q", s, m[2])
	}
	// Docker reads "768M" as MiB; Kubernetes reads it as 10^6. Take the smaller
	// reading for limits, so a check that passes holds under either.
	return n * f, nil
}

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return b
}

// requireMainPackage fails unless dir (like "./cmd/api") holds a Go main
// package: the images and compose files build and run it.
func requireMainPackage(t *testing.T, dir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(repoRoot, dir, "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		if regexp.MustCompile(`(?m)^package main\b`).Match(b) {
			return
		}
	}
	t.Errorf("%s holds no main package, but the deployment builds and runs it", dir)
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"134217728", 134217728},
		{"128MiB", 128 << 20},
		{"768Mi", 768 << 20},
		{"768M", 768_000_000},
		{"1Gi", 1 << 30},
		{"10KiB", 10 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSize(tt.in)
			if err != nil || got != tt.want {
				t.Errorf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "1.5Gi", "12XB", "-1"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) succeeded; want an error", bad)
		}
	}
}

// TestConfigNamesMatchTheProgram keeps configNames in step with what
// internal/config reads, so a renamed variable fails here and not in a pod.
func TestConfigNamesMatchTheProgram(t *testing.T) {
	held := configNames()
	read := map[string]bool{}
	for _, n := range config.Variables() {
		read[n] = true
		if !held[n] {
			t.Errorf("internal/config reads %s, which configNames() in deploy/env_test.go lacks: add it there (and to the chart's values.schema.json if operators may set it)", n)
		}
	}
	for n := range held {
		if !read[n] {
			t.Errorf("configNames() holds %s, which internal/config does not read", n)
		}
	}
}
