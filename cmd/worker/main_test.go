package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
	"github.com/wasmwiz/wasmwiz/testdata"
)

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRun starts the real worker program against PostgreSQL and NATS,
// executes through it, and stops it as SIGTERM would.
func TestRun(t *testing.T) {
	testenv.RequireNATS(t)
	db, dbURL := testenv.Store(t)
	hello := testdata.Module("hello")
	sum := sha256.Sum256(hello)
	sha := hex.EncodeToString(sum[:])
	ctx := context.Background()
	if _, err := db.CreateModule(ctx, store.Module{
		ID: uuid.Must(uuid.NewV7()), Owner: "test", Name: "hello.wasm", SHA256: sha,
		SizeBytes: int64(len(hello)), Exports: []string{"memory", "_start"}, WASI: true, CreatedAt: time.Now(),
	}, hello); err != nil {
		t.Fatalf("CreateModule error = %v", err)
	}

	prefix := testenv.Prefix(t)
	port := testenv.FreePort(t)
	env := map[string]string{
		"ENVIRONMENT":         "development",
		"LOG_LEVEL":           "debug",
		"DATABASE_URL":        dbURL,
		"NATS_URL":            testenv.NATSURL,
		"NATS_SUBJECT_PREFIX": prefix,
		"METRICS_PORT":        strconv.Itoa(port),
		"WORKER_ID":           "w-e2e",
		"WORKER_CONCURRENCY":  "2",
	}
	var stdout, stderr testenv.SyncBuffer
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- run(runCtx, nil, func(k string) string { return env[k] }, &stdout, &stderr) }()

	base := "http://127.0.0.1:" + strconv.Itoa(port)
	testenv.Eventually(t, 20*time.Second, "/health/ready to answer 200", func() bool {
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s", err, stderr.String())
		default:
		}
		code, _ := get(base + "/health/ready")
		return code == http.StatusOK
	})
	if code, body := get(base + "/health/live"); code != http.StatusOK || !strings.Contains(body, `"ok"`) {
		t.Errorf("GET /health/live = %d %s; want 200 ok", code, body)
	}
	if code, body := get(base + "/metrics"); code != http.StatusOK ||
		!strings.Contains(body, "wasmwiz_worker_executions_in_flight") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("GET /metrics = %d, without the worker's and Go's metrics", code)
	}

	nc, err := nats.Connect(testenv.NATSURL)
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	defer nc.Close()
	client, err := protocol.NewClient(nc, prefix)
	if err != nil {
		t.Fatalf("NewClient error = %v", err)
	}
	if n, err := client.CountWorkers(ctx, 300*time.Millisecond); err != nil || n != 1 {
		t.Errorf("CountWorkers = %d, %v; want 1", n, err)
	}
	req := protocol.Request{
		ExecutionID: uuid.NewString(), RequestID: "req-e2e", ModuleSHA256: sha, ModuleName: "hello.wasm",
		Timeout: 2 * time.Second, MemoryLimitBytes: 16 << 20, MaxOutputBytes: 1 << 20,
	}
	ectx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	rep, err := client.Execute(ectx, req)
	if err != nil || rep.Status != "ok" || string(rep.Stdout) != "hello, world\n" || rep.Worker != "w-e2e" {
		t.Fatalf("Execute(hello) = %+v, %v; want ok from w-e2e", rep, err)
	}
	req.ModuleSHA256 = strings.Repeat("0", 64)
	rep, err = client.Execute(ectx, req)
	if err != nil || rep.Failure == nil || rep.Failure.Code != protocol.FailureModuleNotFound {
		t.Fatalf("Execute(unknown module) = %+v, %v; want module_not_found", rep, err)
	}
	// The log goes out from its own goroutine, a moment after the reply.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(stderr.String(), `"request_id":"req-e2e"`); {
		if time.Now().After(deadline) {
			t.Errorf("worker log has no line with the request id")
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	stop() // as SIGTERM does
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run error = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run did not return after its context ended\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), `"msg":"stopped"`) {
		t.Errorf("worker log lacks the stopped line:\n%s", stderr.String())
	}
}

func TestRunVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatalf("run(version) error = %v", err)
	}
	if strings.TrimSpace(out.String()) != version {
		t.Errorf("run(version) printed %q; want %q", out.String(), version)
	}
	if err := run(context.Background(), []string{"nope"}, func(string) string { return "" }, io.Discard, io.Discard); err == nil {
		t.Errorf("run(nope) error = nil; want an unknown command error")
	}
}
