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
		"ADHOC_MODULE_TTL", "PPROF_ADDR",
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

// Defaults of the programs that the deployment math depends on.
const (
	defaultMemoryLimit = 128 << 20 // MEMORY_LIMIT
	defaultServerPort  = 8080      // SERVER_PORT
	defaultMetricsPort = 9090      // METRICS_PORT
	// runtimeOverhead is the worker memory beyond the guests' memories and the
	// module cache: Go runtime, I/O buffers, in-flight module bytes. The chart's
	// worker.runtimeOverhead default and the plain manifests use the same figure.
	runtimeOverhead = 128 << 20
)

// workerMemoryFloor is what one worker replica needs:
// MEMORY_LIMIT x WORKER_CONCURRENCY + MODULE_CACHE_BYTES + runtime overhead.
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
	return mem*conc + cache + runtimeOverhead, nil
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
