package e2e_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wasmwiz/wasmwiz/internal/testenv"
	"github.com/wasmwiz/wasmwiz/testdata"
)

// Slack for "back to normal" after the hostile runs. Goroutines come back
// exactly in practice (a few for NATS and HTTP keep-alives come and go).
// RSS does not: a stack overflow makes wazero grow the guest's call stack,
// a Go []byte outside the memory limit, to about 100 MB (150 MB while it is
// copied), and the Go runtime keeps freed heap for reuse rather than return
// it at once. A heap profile after a forced GC shows about 30 MB live after
// every module here, so the bound is about a leak the size of a run, not
// about the runtime's retention.
const (
	goroutineSlack = 8
	rssSlack       = 320 << 20
)

// TestHostileModules runs every hostile shape of testdata through the real
// api and worker: each is refused at upload or answered 200 with the right
// status; after each, the same worker runs hello; after all of them, the
// worker's goroutines and memory are back where they started.
func TestHostileModules(t *testing.T) {
	p := startPlatform(t, 1, nil)
	w := p.workers[0]
	hello := p.upload("hello", testdata.Module("hello"))

	healthy := func(t *testing.T, after string) {
		t.Helper()
		r, res := p.execute(map[string]any{"module_id": hello})
		if r.status != 200 || res.Status != "ok" || deref(res.Stdout) != "hello, world\n" || res.Worker != "w1" {
			t.Fatalf("Run(hello) after %s = %d %s on %q; want ok on w1", after, r.status, short(r.body), res.Worker)
		}
		if w.exited() {
			t.Fatalf("worker exited after %s:\n%s", after, tail(w.out.String(), 20))
		}
	}
	for range 5 { // warm: pools, caches and connections are part of the baseline
		healthy(t, "warm-up")
	}
	base := workerStats(t, w)
	t.Logf("worker baseline: %d goroutines, RSS %d MiB", base.goroutines, base.rss>>20)

	t.Run("refused at upload", func(t *testing.T) {
		tests := []struct {
			module    string
			reasonHas string
		}{
			{"bigtable", "elements"},
			{"grow_table", "no maximum"},
			{"bad_import", "env.do_evil"},
			{"unknown_wasi", "sock_open_nonexistent"},
			{"bad_signature", "fd_write"},
			{"import_memory", "memory imports are not allowed"},
			{"garbage", "not a WebAssembly module"},
			{"truncated", "truncated"},
		}
		for _, tt := range tests {
			t.Run(tt.module, func(t *testing.T) {
				r := p.do("POST", "/api/wasm/upload?name="+tt.module, "application/wasm", bytes.NewReader(testdata.Module(tt.module)))
				if r.status != 400 || errorCode(r) != "invalid_module" || !strings.Contains(string(r.body), tt.reasonHas) {
					t.Errorf("Upload(%s) = %d %s; want 400 invalid_module mentioning %q", tt.module, r.status, short(r.body), tt.reasonHas)
				}
			})
		}
	})

	t.Run("malformed bytes corpus", func(t *testing.T) {
		accepted := 0
		corpus := malformedCorpus()
		for i, wasm := range corpus {
			r := p.do("POST", "/api/wasm/upload?name=corpus", "application/wasm", bytes.NewReader(wasm))
			switch {
			case r.status == 201:
				accepted++
			case r.status == 400 && (errorCode(r) == "invalid_module" || errorCode(r) == "invalid_request"):
				if msg := errorMessage(r); strings.ContainsAny(msg, "\n") || len(msg) > 500 || strings.Contains(msg, "/root/") || strings.Contains(msg, ".go:") {
					t.Errorf("Upload(corpus[%d]) message = %q; want one short line without internals", i, msg)
				}
			default:
				t.Errorf("Upload(corpus[%d], %d bytes) = %d %s; want 201 or 400", i, len(wasm), r.status, short(r.body))
			}
		}
		t.Logf("%d malformed modules: %d accepted (mutations that stayed valid), %d refused", len(corpus), accepted, len(corpus)-accepted)
		if p.api.exited() {
			t.Fatalf("api exited during the corpus:\n%s", tail(p.api.out.String(), 20))
		}
	})

	ids := map[string]string{}
	for _, name := range []string{"loop", "loop_calls", "start_loop", "sleep", "recursion", "oob", "membomb", "bigmem",
		"huge_output", "stderr_flood", "stdin_huge_read", "files", "sockets", "dirs", "wasi_abuse", "args_env",
		"many_funcs", "grow_table_max"} {
		ids[name] = p.upload(name, testdata.Module(name))
	}
	hostEnv := w.cmd.Env
	oneMiB := strings.Repeat("z", 1<<20)

	tests := []struct {
		module    string
		body      map[string]any
		status    string
		truncated bool
		check     func(t *testing.T, stdout, stderr string)
	}{
		{module: "loop", body: map[string]any{"timeout_ms": 300}, status: "timeout"},
		{module: "loop_calls", body: map[string]any{"timeout_ms": 300}, status: "timeout"},
		{module: "start_loop", body: map[string]any{"timeout_ms": 300}, status: "timeout"},
		{module: "sleep", body: map[string]any{"timeout_ms": 300}, status: "timeout"},
		{module: "recursion", status: "trap"},
		{module: "oob", status: "trap"},
		{module: "membomb", body: map[string]any{"memory_limit_bytes": 16 << 20}, status: "memory_limit"},
		{module: "bigmem", status: "memory_limit"},
		{module: "huge_output", body: map[string]any{"timeout_ms": 500}, status: "timeout", truncated: true,
			check: func(t *testing.T, stdout, _ string) {
				if len(stdout) != 1<<20 {
					t.Errorf("stdout holds %d bytes; want MAX_OUTPUT_SIZE (1 MiB) exactly", len(stdout))
				}
			}},
		{module: "stderr_flood", body: map[string]any{"timeout_ms": 500}, status: "timeout", truncated: true,
			check: func(t *testing.T, _, stderr string) {
				if len(stderr) != 1<<20 {
					t.Errorf("stderr holds %d bytes; want MAX_OUTPUT_SIZE (1 MiB) exactly", len(stderr))
				}
			}},
		{module: "stdin_huge_read", body: map[string]any{"input": oneMiB}, status: "ok",
			check: wantStdout("bad_iov=21\nread=1048576\neof_reads=0\n")},
		{module: "files", status: "ok", check: wantErrnos(3)},
		{module: "sockets", status: "ok", check: wantErrnos(6)},
		{module: "dirs", status: "ok", check: wantErrnos(13)},
		{module: "wasi_abuse", status: "ok", truncated: true,
			check: func(t *testing.T, stdout, _ string) {
				want := "random_get_huge=21\nfd_write_huge=21\nfd_write_iovs=21\nargs_get_oob=21\nenviron_get_oob=21\nclock_oob=21\nfd_write_bad_fd=8\n"
				if !strings.HasPrefix(stdout, want) {
					t.Errorf("stdout begins %q; want %q", short([]byte(stdout)), want)
				}
				if len(stdout) != 1<<20 {
					t.Errorf("stdout holds %d bytes; want the 512 MiB write capped at 1 MiB", len(stdout))
				}
			}},
		{module: "args_env", status: "ok",
			check: func(t *testing.T, stdout, _ string) {
				// argv[0] is the module's name; nothing else: no host environment.
				if stdout != "args_env\n" {
					t.Errorf("stdout = %q; want argv[0] alone, no environment", short([]byte(stdout)))
				}
				for _, kv := range hostEnv {
					if k, _, _ := strings.Cut(kv, "="); strings.Contains(stdout, k) {
						t.Errorf("the guest sees the worker's %s", k)
					}
				}
			}},
		{module: "many_funcs", status: "ok", check: wantStdout("many_funcs ok\n")},
		{module: "grow_table_max", status: "ok", check: wantStdout("grown\n")},
	}
	for _, tt := range tests {
		t.Run(tt.module, func(t *testing.T) {
			body := map[string]any{"module_id": ids[tt.module]}
			for k, v := range tt.body {
				body[k] = v
			}
			r, res := p.execute(body)
			if r.status != 200 {
				t.Fatalf("Run(%s) = %d %s; want 200", tt.module, r.status, short(r.body))
			}
			if res.Status != tt.status || res.Truncated != tt.truncated {
				t.Errorf("Run(%s) status = %q truncated %v (error %q); want %q truncated %v",
					tt.module, res.Status, res.Truncated, deref(res.Error), tt.status, tt.truncated)
			}
			if tt.check != nil {
				stdout, stderr := outputs(t, r)
				tt.check(t, stdout, stderr)
			}
			healthy(t, tt.module)
		})
	}

	t.Run("worker back to normal", func(t *testing.T) {
		var now stats
		testenv.Eventually(t, 15*time.Second, "worker goroutines and RSS back to normal", func() bool {
			healthy(t, "everything")
			now = workerStats(t, w)
			return now.goroutines <= base.goroutines+goroutineSlack && now.rss <= base.rss+rssSlack
		})
		t.Logf("worker after the hostile runs: %d goroutines (baseline %d), RSS %d MiB (baseline %d MiB), heap in use %d MiB, idle %d MiB",
			now.goroutines, base.goroutines, now.rss>>20, base.rss>>20, now.heapInuse>>20, now.heapIdle>>20)
	})
}

// wantStdout checks stdout exactly.
func wantStdout(want string) func(*testing.T, string, string) {
	return func(t *testing.T, stdout, _ string) {
		t.Helper()
		if stdout != want {
			t.Errorf("stdout = %q; want %q", short([]byte(stdout)), want)
		}
	}
}

// wantErrnos checks n lines of "call=errno", none of them 0 (success).
func wantErrnos(n int) func(*testing.T, string, string) {
	return func(t *testing.T, stdout, _ string) {
		t.Helper()
		lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
		if len(lines) != n {
			t.Fatalf("stdout = %q; want %d lines of call=errno", stdout, n)
		}
		for _, l := range lines {
			call, errno, ok := strings.Cut(l, "=")
			if n, err := strconv.Atoi(errno); !ok || err != nil || n == 0 {
				t.Errorf("%s answered errno %q; want a failure (non-zero)", call, errno)
			}
		}
	}
}

// outputs returns an execution's stdout and stderr, whether they came as
// text or as base64.
func outputs(t *testing.T, r response) (stdout, stderr string) {
	t.Helper()
	var o struct {
		Stdout       *string `json:"stdout"`
		StdoutBase64 *string `json:"stdout_base64"`
		Stderr       *string `json:"stderr"`
		StderrBase64 *string `json:"stderr_base64"`
	}
	if err := jsonDecode(r.body, &o); err != nil {
		t.Fatalf("decode execution: %v", err)
	}
	one := func(text, b64 *string) string {
		if text != nil {
			return *text
		}
		if b64 == nil {
			return ""
		}
		b, err := base64.StdEncoding.DecodeString(*b64)
		if err != nil {
			t.Fatalf("output base64: %v", err)
		}
		return string(b)
	}
	return one(o.Stdout, o.StdoutBase64), one(o.Stderr, o.StderrBase64)
}

func errorMessage(r response) string {
	var e struct {
		Error struct{ Message string } `json:"error"`
	}
	jsonDecode(r.body, &e)
	return e.Error.Message
}

// malformedCorpus is modules broken in the ways uploads break: empty,
// header only, bad version, every cut of a small module, bit flips, and
// counts and sizes claiming more than the bytes hold.
func malformedCorpus() [][]byte {
	hello := testdata.Module("hello")
	corpus := [][]byte{
		[]byte("\x00asm"),
		[]byte("\x00asm\x01\x00\x00\x00"),
		[]byte("\x00asm\x02\x00\x00\x00"),
		[]byte("\x00ASM\x01\x00\x00\x00"),
		[]byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
		[]byte("#!/bin/sh\nrm -rf /\n"),
		[]byte("<?xml version=\"1.0\"?><wasm/>"),
		append([]byte("\x00asm\x01\x00\x00\x00\x01\xff\xff\xff\xff\x0f"), make([]byte, 16)...),            // type section claiming 4 GiB
		append([]byte("\x00asm\x01\x00\x00\x00\x05\x07\x01\x00\xff\xff\xff\xff\x0f"), make([]byte, 4)...), // memory min 2^32-1 pages
		[]byte("\x00asm\x01\x00\x00\x00\x01\x06\x01\x60\xff\xff\xff\xff"),                                 // 2^32 parameters
		[]byte("\x00asm\x01\x00\x00\x00\x0a\x08\x01\x06\xff\xff\xff\xff\x0f\x7f"),                         // 2^32 locals
		[]byte("\x00asm\x01\x00\x00\x00\x00\x05\x04name\x00"),                                             // custom name section, empty
		[]byte("\x00asm\x01\x00\x00\x00\x0e\x01\x00"),                                                     // unknown section id 14
		bytes.Repeat([]byte{0}, 4096),
	}
	for cut := 9; cut < len(hello); cut += 7 {
		corpus = append(corpus, hello[:cut])
	}
	for i := 8; i < len(hello); i += 5 {
		b := bytes.Clone(hello)
		b[i] ^= 0xff
		corpus = append(corpus, b)
	}
	return corpus
}

// stats are what the worker's /metrics say about its health.
type stats struct {
	goroutines int
	rss        int64
	heapInuse  int64
	heapIdle   int64
	released   int64
}

// workerStats reads go_goroutines and process_resident_memory_bytes from
// the worker's metrics endpoint (METRICS_PORT).
func workerStats(t *testing.T, w *process) stats {
	t.Helper()
	m, port := workerMetrics(t, w)
	s := stats{
		goroutines: int(m["go_goroutines"]),
		rss:        int64(m["process_resident_memory_bytes"]),
		heapInuse:  int64(m["go_memstats_heap_inuse_bytes"]),
		heapIdle:   int64(m["go_memstats_heap_idle_bytes"]),
		released:   int64(m["go_memstats_heap_released_bytes"]),
	}
	if s.goroutines == 0 || s.rss == 0 {
		t.Fatalf("worker metrics on port %s lack go_goroutines or process_resident_memory_bytes", port)
	}
	return s
}

// peakRSS is a process's high-water resident set (Linux), in bytes.
func peakRSS(t *testing.T, p *process) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("read %s's status: %v", p.name, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	t.Fatalf("no VmHWM in %s's status", p.name)
	return 0
}

// TestHeavyModuleUploads is the long run of the compile-time shapes, too
// heavy for CI (gigabytes and seconds of CPU): WASMWIZ_HEAVY=1 runs it.
// Each module is valid and under MAX_WASM_SIZE; the api validates it at
// upload and a worker compiles it at its first run. Both must stay within
// the memory the deployment gives them (deploy/k8s: api 512Mi, worker
// 768Mi), or one upload by any tenant gets the pod OOM-killed.
func TestHeavyModuleUploads(t *testing.T) {
	if os.Getenv("WASMWIZ_HEAVY") == "" {
		t.Skip("a long run: set WASMWIZ_HEAVY=1 to run it")
	}
	const apiLimit, workerLimit = 512 << 20, 768 << 20
	p := startPlatform(t, 1, nil)
	tests := []struct {
		name string
		wasm []byte
	}{
		{"many_funcs_200k", testdata.ManyFuncs(200_000)}, // 10.4 MB, the most functions under 10 MiB
		{"long_function_1m", testdata.LongFunction(1e6)}, // 7 MB in one function: refused by the 1 MiB body limit
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			began := time.Now()
			r := p.do("POST", "/api/wasm/upload?name="+tt.name, "application/wasm", bytes.NewReader(tt.wasm))
			took := time.Since(began)
			apiPeak := peakRSS(t, p.api)
			t.Logf("upload of %d bytes: %d in %v; api peak RSS %d MiB", len(tt.wasm), r.status, took, apiPeak>>20)
			if r.status != 201 && r.status != 400 && r.status != 413 {
				t.Fatalf("Upload(%s) = %d %s; want 201, or a refusal", tt.name, r.status, short(r.body))
			}
			if apiPeak > apiLimit {
				t.Errorf("api peak RSS %d MiB after Upload(%s); want under the deployment's %d MiB", apiPeak>>20, tt.name, apiLimit>>20)
			}
			if r.status != 201 {
				return
			}
			var m struct{ ID string }
			jsonDecode(r.body, &m)
			began = time.Now()
			rr, res := p.execute(map[string]any{"module_id": m.ID})
			workerPeak := peakRSS(t, p.workers[0])
			t.Logf("first run: %d %q in %v (queue %.0f ms); worker peak RSS %d MiB", rr.status, res.Status, time.Since(began), res.Usage.QueueMS, workerPeak>>20)
			if rr.status != 200 || res.Status != "ok" {
				t.Errorf("Run(%s) = %d %s; want ok", tt.name, rr.status, short(rr.body))
				// The compile goes on without its caller; the next run joins it.
				began = time.Now()
				rr, res = p.execute(map[string]any{"module_id": m.ID})
				t.Logf("second run: %d %q in %v (queue %.0f ms, cache hit in the worker's log)", rr.status, res.Status, time.Since(began), res.Usage.QueueMS)
			}
			if workerPeak > workerLimit {
				t.Errorf("worker peak RSS %d MiB after Run(%s); want under the deployment's %d MiB", workerPeak>>20, tt.name, workerLimit>>20)
			}
		})
	}
}
