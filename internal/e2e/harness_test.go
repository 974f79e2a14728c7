// Package e2e_test builds the real api and worker binaries, starts them
// against the machine's PostgreSQL, Redis and NATS, and drives them over
// HTTP as a client would.
package e2e_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wasmwiz-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, name := range []string{"api", "worker"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "../../cmd/"+name)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", name, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// process is a running binary whose output is kept for the test's log.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer = testenv.SyncBuffer

func freePort(t *testing.T) int { return testenv.FreePort(t) }

func start(t *testing.T, name, bin string, env map[string]string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, bin), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &process{name: name, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("--- %s output (last lines):\n%s", name, tail(p.out.String(), 40))
		}
	})
	return p
}

// stop signals the process and waits for it to exit.
func (p *process) stop(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// platform is one api and its workers on a database and subject prefix of
// their own.
type platform struct {
	t       *testing.T
	url     string
	env     map[string]string
	api     *process
	workers []*process
}

func startPlatform(t *testing.T, workers int, extra map[string]string) *platform {
	t.Helper()
	testenv.RequireNATS(t)
	testenv.RequireRedis(t)
	port := freePort(t)
	env := map[string]string{
		"DATABASE_URL":        testenv.Database(t),
		"NATS_URL":            testenv.NATSURL,
		"REDIS_URL":           testenv.RedisURL,
		"NATS_SUBJECT_PREFIX": testenv.Prefix(t),
		"SERVER_PORT":         fmt.Sprint(port),
		"LOG_LEVEL":           "debug",
		"WORKER_CONCURRENCY":  "2",
	}
	for k, v := range extra {
		env[k] = v
	}
	p := &platform{t: t, url: fmt.Sprintf("http://127.0.0.1:%d", port), env: env}
	p.api = start(t, "api", "api", env)
	for range workers {
		p.addWorker()
	}
	waitReady(t, p.api, p.url)
	p.waitWorkers(workers)
	return p
}

func waitReady(t *testing.T, api *process, url string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, "api ready", func() bool {
		if api.exited() {
			t.Fatalf("api exited:\n%s", tail(api.out.String(), 40))
		}
		res, err := http.Get(url + "/health/ready")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
}

// addAPI starts another api replica on the same database, NATS prefix and
// Redis, and returns its base URL.
func (p *platform) addAPI() string {
	p.t.Helper()
	env := map[string]string{}
	for k, v := range p.env {
		env[k] = v
	}
	port := freePort(p.t)
	env["SERVER_PORT"] = fmt.Sprint(port)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	api := start(p.t, "api"+env["SERVER_PORT"], "api", env)
	waitReady(p.t, api, url)
	return url
}

// createKey runs `api keys create` and returns the printed key.
func (p *platform) createKey(owner, role, tier string) string {
	p.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "api"), "keys", "create", "--name", owner+"-"+role, "--owner", owner, "--role", role, "--tier", tier)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range p.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		p.t.Fatalf("api keys create: %v: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

func (p *platform) addWorker() *process {
	p.t.Helper()
	env := map[string]string{}
	for k, v := range p.env {
		env[k] = v
	}
	n := len(p.workers) + 1
	env["WORKER_ID"] = fmt.Sprintf("w%d", n)
	env["METRICS_PORT"] = fmt.Sprint(freePort(p.t))
	w := start(p.t, env["WORKER_ID"], "worker", env)
	p.workers = append(p.workers, w)
	return w
}

// waitWorkers waits until /health counts n workers.
func (p *platform) waitWorkers(n int) {
	p.t.Helper()
	testenv.Eventually(p.t, 30*time.Second, fmt.Sprintf("%d workers online", n), func() bool {
		var h struct {
			Checks map[string]struct {
				Count *int `json:"count"`
			} `json:"checks"`
		}
		r := p.do("GET", "/health", "", nil)
		if json.Unmarshal(r.body, &h) != nil {
			return false
		}
		c := h.Checks["workers"].Count
		return c != nil && *c == n
	})
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (p *platform) do(method, path, contentType string, body io.Reader, headers ...string) response {
	p.t.Helper()
	return p.doAt(p.url, method, path, contentType, body, headers...)
}

func (p *platform) doAt(base, method, path, contentType string, body io.Reader, headers ...string) response {
	p.t.Helper()
	req, err := http.NewRequest(method, base+path, body)
	if err != nil {
		p.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		p.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

func (p *platform) upload(name string, wasm []byte) string {
	p.t.Helper()
	r := p.do("POST", "/api/wasm/upload?name="+name, "application/wasm", bytes.NewReader(wasm))
	if r.status != 201 {
		p.t.Fatalf("upload %s = %d %s", name, r.status, r.body)
	}
	var m struct{ ID string }
	json.Unmarshal(r.body, &m)
	return m.ID
}

type execResult struct {
	ExecutionID  string  `json:"execution_id"`
	ModuleID     string  `json:"module_id"`
	Status       string  `json:"status"`
	ExitCode     uint32  `json:"exit_code"`
	Stdout       *string `json:"stdout"`
	StdoutBase64 *string `json:"stdout_base64"`
	Stderr       *string `json:"stderr"`
	Truncated    bool    `json:"truncated"`
	Error        *string `json:"error"`
	Usage        struct {
		DurationMS      float64 `json:"duration_ms"`
		MemoryPeakBytes uint64  `json:"memory_peak_bytes"`
		QueueMS         float64 `json:"queue_ms"`
	} `json:"usage"`
	Worker string `json:"worker"`
}

// errorBody is API.md's one error shape.
type errorBody struct {
	Error *struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		RequestID string `json:"request_id"`
	} `json:"error"`
}

func (p *platform) execute(body map[string]any) (response, execResult) {
	p.t.Helper()
	b, _ := json.Marshal(body)
	r := p.do("POST", "/api/wasm/execute", "application/json", bytes.NewReader(b))
	var res execResult
	if r.status == 200 {
		if err := json.Unmarshal(r.body, &res); err != nil {
			p.t.Fatalf("execute: decode %s: %v", r.body, err)
		}
	}
	return r, res
}

func errorCode(r response) string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(r.body, &e)
	return e.Error.Code
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func multipartForm(t *testing.T, fields ...any) (string, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		name := fields[i].(string)
		switch v := fields[i+1].(type) {
		case []byte:
			fw, _ := w.CreateFormFile(name, name+".wasm")
			fw.Write(v)
		case string:
			w.WriteField(name, v)
		}
	}
	w.Close()
	return w.FormDataContentType(), &buf
}

func short(b []byte) string {
	s := string(b)
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return strings.TrimSpace(s)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func jsonDecode(b []byte, v any) error { return json.Unmarshal(b, v) }

func netDial(port int) (net.Conn, error) {
	return net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
}

// workerMetrics reads the unlabelled samples of the worker's metrics
// endpoint (METRICS_PORT), and says which port that was.
func workerMetrics(t *testing.T, w *process) (map[string]float64, string) {
	t.Helper()
	port := ""
	for _, kv := range w.cmd.Env {
		if v, ok := strings.CutPrefix(kv, "METRICS_PORT="); ok {
			port = v
		}
	}
	res, err := http.Get("http://127.0.0.1:" + port + "/metrics")
	if err != nil {
		t.Fatalf("%s metrics: %v", w.name, err)
	}
	defer res.Body.Close()
	m, err := metricValues(res.Body)
	if err != nil {
		t.Fatalf("%s metrics: %v", w.name, err)
	}
	return m, port
}

// metricValues reads the unlabelled samples of a Prometheus text exposition
// (go_goroutines, go_memstats_*, process_resident_memory_bytes, ...).
func metricValues(r io.Reader) (map[string]float64, error) {
	m := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if f, err := strconv.ParseFloat(value, 64); err == nil {
			m[name] = f
		}
	}
	return m, sc.Err()
}
