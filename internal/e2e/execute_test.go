package e2e_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
	"github.com/wasmwiz/wasmwiz/testdata"
)

func TestExecuteEndToEnd(t *testing.T) {
	p := startPlatform(t, 2, nil)
	ids := map[string]string{}
	for _, name := range []string{"hello", "echo", "stderr", "exit3", "unreachable", "oob", "loop", "membomb",
		"bigmem", "recursion", "no_start", "args_env", "huge_output", "goprog", "files"} {
		ids[name] = p.upload(name, testdata.Module(name+".wasm"))
	}

	tests := []struct {
		name       string
		body       map[string]any
		status     string
		exitCode   uint32
		stdout     string // exact unless empty
		stdoutHas  string
		stderr     string
		errorHas   string
		truncated  bool
		minMemPeak uint64
	}{
		{name: "hello", body: map[string]any{"module_id": ids["hello"]}, status: "ok", stdout: "hello, world\n", minMemPeak: 65536},
		{name: "echo", body: map[string]any{"module_id": ids["echo"], "input": "ping ✓"}, status: "ok", stdout: "ping ✓"},
		{name: "stderr", body: map[string]any{"module_id": ids["stderr"]}, status: "ok", stderr: "oops\n"},
		{name: "exit 3", body: map[string]any{"module_id": ids["exit3"]}, status: "exit", exitCode: 3},
		{name: "unreachable", body: map[string]any{"module_id": ids["unreachable"]}, status: "trap", errorHas: "unreachable"},
		{name: "out of bounds", body: map[string]any{"module_id": ids["oob"]}, status: "trap", errorHas: "out of bounds"},
		{name: "recursion", body: map[string]any{"module_id": ids["recursion"]}, status: "trap"},
		{name: "infinite loop", body: map[string]any{"module_id": ids["loop"], "timeout_ms": 300}, status: "timeout"},
		{name: "memory bomb", body: map[string]any{"module_id": ids["membomb"], "memory_limit_bytes": 16 << 20}, status: "memory_limit"},
		{name: "declared memory above limit", body: map[string]any{"module_id": ids["bigmem"]}, status: "memory_limit"},
		{name: "args and env", body: map[string]any{"module_id": ids["args_env"], "args": []string{"--flag", "two words"},
			"env": map[string]string{"GREETING": "hi"}}, status: "ok", stdoutHas: "--flag"},
		{name: "huge output", body: map[string]any{"module_id": ids["huge_output"], "timeout_ms": 2000}, truncated: true},
		{name: "go program", body: map[string]any{"module_id": ids["goprog"], "input": "hello"}, status: "ok", stdoutHas: "ello"},
		{name: "go program out of memory", body: map[string]any{"module_id": ids["goprog"], "input": "oom",
			"memory_limit_bytes": 64 << 20}, status: "memory_limit", exitCode: 2}, // Go's runtime exits 2 on a fatal error
		{name: "no filesystem", body: map[string]any{"module_id": ids["files"]}, status: "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, res := p.execute(tt.body)
			if r.status != 200 {
				t.Fatalf("execute = %d %s; want 200", r.status, short(r.body))
			}
			if tt.status != "" && res.Status != tt.status {
				t.Errorf("status = %q (error %q); want %q", res.Status, deref(res.Error), tt.status)
			}
			if res.ExitCode != tt.exitCode {
				t.Errorf("exit_code = %d; want %d", res.ExitCode, tt.exitCode)
			}
			if tt.stdout != "" && deref(res.Stdout) != tt.stdout {
				t.Errorf("stdout = %q; want %q", deref(res.Stdout), tt.stdout)
			}
			if !strings.Contains(deref(res.Stdout), tt.stdoutHas) {
				t.Errorf("stdout = %q; want it to contain %q", short([]byte(deref(res.Stdout))), tt.stdoutHas)
			}
			if tt.stderr != "" && deref(res.Stderr) != tt.stderr {
				t.Errorf("stderr = %q; want %q", deref(res.Stderr), tt.stderr)
			}
			if !strings.Contains(deref(res.Error), tt.errorHas) {
				t.Errorf("error = %q; want it to mention %q", deref(res.Error), tt.errorHas)
			}
			if res.Truncated != tt.truncated {
				t.Errorf("truncated = %v; want %v", res.Truncated, tt.truncated)
			}
			if tt.truncated && len(deref(res.Stdout))+len(deref(res.StdoutBase64))*3/4 < 1<<20-4 {
				t.Errorf("truncated stdout holds %d bytes; want MAX_OUTPUT_SIZE kept", len(deref(res.Stdout)))
			}
			if res.Usage.MemoryPeakBytes < tt.minMemPeak {
				t.Errorf("memory_peak_bytes = %d; want at least %d", res.Usage.MemoryPeakBytes, tt.minMemPeak)
			}
			if res.ExecutionID == "" || res.Worker == "" || res.ModuleID != tt.body["module_id"] {
				t.Errorf("execution_id %q, worker %q, module_id %q; want all set", res.ExecutionID, res.Worker, res.ModuleID)
			}
		})
	}

	t.Run("no _start", func(t *testing.T) {
		r, _ := p.execute(map[string]any{"module_id": ids["no_start"]})
		if r.status != 400 || errorCode(r) != "invalid_module" {
			t.Errorf("execute no_start = %d %s; want 400 invalid_module", r.status, short(r.body))
		}
	})

	t.Run("binary output comes as base64", func(t *testing.T) {
		in := []byte{0xff, 0xfe, 0x00, 'x'}
		_, res := p.execute(map[string]any{"module_id": ids["echo"], "input_base64": base64.StdEncoding.EncodeToString(in)})
		got, err := base64.StdEncoding.DecodeString(deref(res.StdoutBase64))
		if err != nil || !bytes.Equal(got, in) || res.Stdout != nil {
			t.Errorf("stdout %v, stdout_base64 %q; want the bytes back as base64 only", res.Stdout, deref(res.StdoutBase64))
		}
	})

	t.Run("1 MiB stdin and stdout through a stock NATS", func(t *testing.T) {
		in := strings.Repeat("0123456789abcdef", (1<<20)/16)
		r, res := p.execute(map[string]any{"module_id": ids["echo"], "input": in})
		if r.status != 200 || res.Status != "ok" || deref(res.Stdout) != in || res.Truncated {
			t.Errorf("echo of 1 MiB = %d status %q, %d bytes back, truncated %v; want the input whole",
				r.status, res.Status, len(deref(res.Stdout)), res.Truncated)
		}
	})

	t.Run("multipart ad-hoc module", func(t *testing.T) {
		ct, body := multipartForm(t, "file", testdata.Module("echo.wasm"), "input", "ad hoc")
		r := p.do("POST", "/api/wasm/execute", ct, body)
		if r.status != 200 || !strings.Contains(string(r.body), `"stdout":"ad hoc"`) {
			t.Fatalf("multipart ad-hoc execute = %d %s", r.status, short(r.body))
		}
		list := p.do("GET", "/api/wasm/modules?limit=100", "", nil)
		if n := strings.Count(string(list.body), `"id"`); n != len(ids) {
			t.Errorf("listing shows %d modules after an ad-hoc run; want %d (ad-hoc modules are not kept)", n, len(ids))
		}
	})

	t.Run("multipart by id", func(t *testing.T) {
		ct, body := multipartForm(t, "module_id", ids["echo"], "input", "by id")
		r := p.do("POST", "/api/wasm/execute", ct, body)
		if r.status != 200 || !strings.Contains(string(r.body), `"stdout":"by id"`) {
			t.Errorf("multipart execute by id = %d %s", r.status, short(r.body))
		}
	})

	t.Run("request id reaches the worker", func(t *testing.T) {
		r := p.do("POST", "/api/wasm/execute", "application/json",
			strings.NewReader(`{"module_id":"`+ids["hello"]+`"}`), "X-Request-ID", "e2e-trace-42")
		if r.status != 200 {
			t.Fatalf("execute = %d %s", r.status, short(r.body))
		}
		testenv.Eventually(t, 5*time.Second, "request id in a worker's log", func() bool {
			for _, w := range p.workers {
				if strings.Contains(w.out.String(), `"request_id":"e2e-trace-42"`) {
					return true
				}
			}
			return false
		})
	})

	t.Run("both workers take work", func(t *testing.T) {
		seen := map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 5 {
					_, res := p.execute(map[string]any{"module_id": ids["hello"]})
					mu.Lock()
					seen[res.Worker]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if seen["w1"] == 0 || seen["w2"] == 0 {
			t.Errorf("executions by worker = %v; want both w1 and w2 to take work", seen)
		}
	})
}

// A worker killed mid-run costs its requests about a second, not their
// time limit: its heartbeats stop, and the api answers 502 worker_error.
// A worker started afterwards serves what follows.
func TestWorkerKilledMidRun(t *testing.T) {
	// w1 alone takes the loops, so that they are certainly on the worker
	// that dies (with two workers from the start, the queue group could
	// hand them all to the other, as CI once saw); w2 starts after the
	// kill and serves what follows.
	p := startPlatform(t, 1, map[string]string{"WORKER_CONCURRENCY": "4"})
	loop := p.upload("loop", testdata.Module("loop.wasm"))
	hello := p.upload("hello", testdata.Module("hello.wasm"))

	// The dev tier's longest limit; the 502s must come well before it. No
	// more requests than w1's slots, so none waits in its queue.
	const n, limit = 4, 5 * time.Second
	type outcome struct {
		status int
		code   string
		ended  time.Time
	}
	outcomes := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r := p.do("POST", "/api/wasm/execute", "application/json",
				strings.NewReader(fmt.Sprintf(`{"module_id":%q,"timeout_ms":%d}`, loop, limit.Milliseconds())),
				"X-Request-ID", fmt.Sprintf("kill-%d", i))
			outcomes[i] = outcome{r.status, errorCode(r), time.Now()}
		})
	}
	victim := p.workers[0]
	testenv.Eventually(t, 10*time.Second, "w1 running the executions", func() bool {
		return strings.Count(victim.out.String(), `"msg":"execution started"`) >= n
	})
	victim.stop(syscall.SIGKILL)
	killed := time.Now()

	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(limit + 30*time.Second):
		t.Fatal("requests still hanging 30 s past their limit after a worker was killed")
	}
	for i, o := range outcomes {
		switch {
		case o.status == 502 && o.code == "worker_error":
			// A behaviour bound, not a speed figure: the answer came from
			// the silence of the worker, well before the time limit could.
			after := o.ended.Sub(killed)
			t.Logf("request %d: 502 worker_error %v after the kill", i, after.Round(time.Millisecond))
			if after > limit-time.Second {
				t.Errorf("request %d: 502 came %v after the kill; want it within about %v (no heartbeat), not at the limit",
					i, after, protocol.WorkerLostAfter)
			}
		default:
			t.Errorf("request %d = %d %s; want 502 worker_error (it was on the killed w1)", i, o.status, o.code)
		}
	}

	p.addWorker()
	p.waitWorkers(1)
	for i := range 5 {
		r, res := p.execute(map[string]any{"module_id": hello})
		if r.status != 200 || res.Status != "ok" || res.Worker != "w2" {
			t.Errorf("execute %d after the kill = %d %s on %q; want ok on w2", i, r.status, short(r.body), res.Worker)
		}
	}
}

func TestNoWorkers(t *testing.T) {
	p := startPlatform(t, 0, nil)
	hello := p.upload("hello", testdata.Module("hello.wasm"))

	began := time.Now()
	r, _ := p.execute(map[string]any{"module_id": hello, "timeout_ms": 5000})
	waited := time.Since(began)
	if r.status != 503 || errorCode(r) != "no_workers" || r.header.Get("Retry-After") == "" {
		t.Errorf("execute with no worker = %d %s (Retry-After %q); want 503 no_workers with Retry-After",
			r.status, short(r.body), r.header.Get("Retry-After"))
	}
	// Behaviour, not speed: the answer must not wait out the execution's limit.
	if waited >= 5*time.Second {
		t.Errorf("no_workers took %v; want an answer without waiting for the time limit", waited)
	}

	p.addWorker()
	p.waitWorkers(1)
	if r, res := p.execute(map[string]any{"module_id": hello}); r.status != 200 || res.Status != "ok" {
		t.Errorf("execute once a worker is back = %d %s; want 200 ok", r.status, short(r.body))
	}
}
