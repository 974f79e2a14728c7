package httpapi

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/protocol"
	"github.com/wasmwiz/wasmwiz/internal/store"
)

// Executor sends one execution to the worker fleet and waits for its reply.
type Executor interface {
	Execute(ctx context.Context, req protocol.Request) (protocol.Reply, error)
}

// ExecuteGrace is how long the api waits past an execution's time limit:
// the worker's deadline starts when the module starts, so the wait must
// also cover queueing, fetching and compiling the module, and the reply.
const ExecuteGrace = 5 * time.Second

// Bounds on what reaches the guest besides stdin, so that metadata stays far
// below the NATS max payload and argv/environ stay sane.
const (
	maxArgs      = 256
	maxEnv       = 256
	maxArgBytes  = 4096
	maxMetaBytes = 64 << 10
)

type executeRequest struct {
	ModuleID         string            `json:"module_id"`
	Input            *string           `json:"input"`
	InputBase64      *string           `json:"input_base64"`
	Args             []string          `json:"args"`
	Env              map[string]string `json:"env"`
	TimeoutMS        *int64            `json:"timeout_ms"`
	MemoryLimitBytes *int64            `json:"memory_limit_bytes"`
}

type usageJSON struct {
	DurationMS      float64 `json:"duration_ms"`
	MemoryPeakBytes uint64  `json:"memory_peak_bytes"`
	QueueMS         float64 `json:"queue_ms"`
}

type executeResponse struct {
	ExecutionID  string    `json:"execution_id"`
	ModuleID     string    `json:"module_id"`
	Status       string    `json:"status"`
	ExitCode     uint32    `json:"exit_code"`
	Stdout       *string   `json:"stdout,omitempty"`
	StdoutBase64 *string   `json:"stdout_base64,omitempty"`
	Stderr       *string   `json:"stderr,omitempty"`
	StderrBase64 *string   `json:"stderr_base64,omitempty"`
	Truncated    bool      `json:"truncated"`
	Error        *string   `json:"error"`
	Usage        usageJSON `json:"usage"`
	Worker       string    `json:"worker"`
}

// execution is a validated execute request, whatever its encoding.
type execution struct {
	module  store.Module
	stdin   []byte
	args    []string
	env     map[string]string
	timeout time.Duration
	memory  int64
}

func (s *Server) execute(c echo.Context) error {
	p := principalOf(c)
	// The rate and the quota: see executeLimits.
	limits, err := s.executeLimits(c, p)
	if err != nil {
		return err
	}
	ex, err := s.readExecution(c, p)
	if err != nil {
		return limits.invalid(err)
	}
	if !slices.Contains(ex.module.Exports, "_start") {
		return limits.invalid(newError(http.StatusBadRequest, "invalid_module",
			"module %s exports no _start function; only WASI command modules can be executed", ex.module.ID))
	}

	if err := limits.allow(); err != nil {
		return err
	}
	ctx := c.Request().Context()
	execID := uuid.Must(uuid.NewV7())
	// Each id once: the request and the answer share the strings.
	execIDs, moduleIDs := execID.String(), ex.module.ID.String()
	req := protocol.Request{
		ExecutionID:      execIDs,
		RequestID:        requestIDOf(c),
		ModuleID:         moduleIDs,
		ModuleSHA256:     ex.module.SHA256,
		ModuleName:       ex.module.Name,
		Args:             ex.args,
		Env:              ex.env,
		Timeout:          ex.timeout,
		MemoryLimitBytes: uint64(ex.memory),
		MaxOutputBytes:   s.cfg.MaxOutputSize,
		Stdin:            ex.stdin,
	}
	if err := req.Validate(); err != nil {
		return invalidRequest("%v", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, ex.timeout+ExecuteGrace)
	defer cancel()
	sent := time.Now()
	reply, err := s.exec.Execute(waitCtx, req)
	s.recordExecution(c, p, execID, ex, sent, reply, err)
	switch {
	case err == nil:
	case errors.Is(err, protocol.ErrTooLarge):
		return invalidRequest("args and env are too large")
	case ctx.Err() != nil:
		// The client left; whatever else happened, it is a 499 in the log.
		return fmt.Errorf("%w: %w", ctx.Err(), err)
	case errors.Is(err, protocol.ErrNoWorkers), errors.Is(err, protocol.ErrTimeout), errors.Is(err, protocol.ErrWorkerLost):
		return err // domainErrors maps them
	default:
		// A garbled reply, a lost payload, NATS gone mid-request: the
		// platform failed between api and worker.
		return &Error{Status: http.StatusBadGateway, Code: "worker_error", Message: "the execution failed between api and worker", Err: err}
	}
	if reply.Failure != nil {
		return failureError(ex.module.ID, reply.Failure)
	}
	// The access log has the request and the worker logs each execution at
	// Debug with its request id. This line is for debugging the api side.
	s.log.DebugContext(ctx, "executed", "execution_id", execID, "module_id", ex.module.ID, "owner", p.Owner,
		"status", reply.Status, "exit_code", reply.ExitCode, "duration_ms", ms(reply.Duration),
		"queue_ms", ms(reply.QueueTime), "worker", reply.Worker, "cache_hit", reply.CacheHit)
	return c.JSON(http.StatusOK, toExecuteResponse(execIDs, moduleIDs, reply))
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func toExecuteResponse(execID, moduleID string, r protocol.Reply) executeResponse {
	out := executeResponse{
		ExecutionID: execID, ModuleID: moduleID, Status: r.Status, ExitCode: r.ExitCode,
		Truncated: r.Truncated, Worker: r.Worker,
		Usage: usageJSON{DurationMS: ms(r.Duration), MemoryPeakBytes: r.MemoryPeak, QueueMS: ms(r.QueueTime)},
	}
	out.Stdout, out.StdoutBase64 = textOrBase64(r.Stdout)
	out.Stderr, out.StderrBase64 = textOrBase64(r.Stderr)
	if r.Error != "" {
		out.Error = &r.Error
	}
	return out
}

// textOrBase64 returns output as text when it is valid UTF-8, else as
// base64 (API.md: stdout_base64 / stderr_base64 instead).
func textOrBase64(b []byte) (text, b64 *string) {
	if utf8.Valid(b) {
		s := string(b)
		return &s, nil
	}
	s := base64.StdEncoding.EncodeToString(b)
	return nil, &s
}

// failureError maps a worker's report that it could not run the module.
func failureError(moduleID uuid.UUID, f *protocol.Failure) error {
	switch f.Code {
	case protocol.FailureModuleNotFound:
		return newError(http.StatusNotFound, "module_not_found", "module %s not found", moduleID)
	case protocol.FailureInvalidModule:
		return newError(http.StatusBadRequest, "invalid_module", "%s", f.Message)
	}
	return &Error{Status: http.StatusBadGateway, Code: "worker_error", Message: "the worker failed to run the module",
		Err: errors.New(f.Message)}
}

// readExecution decodes a JSON or multipart execute request and applies the
// caller's limits.
func (s *Server) readExecution(c echo.Context, p auth.Principal) (execution, error) {
	r := c.Request()
	if mediaType(r) == "multipart/form-data" {
		return s.readMultipartExecution(c, p)
	}
	var body executeRequest
	// JSON escapes may take six bytes for one of input; base64 takes 4/3.
	limit := 6*s.cfg.MaxInputSize + maxMetaBytes*2
	if err := decodeJSON(r, limit, &body); err != nil {
		var apiErr *Error
		if errors.As(err, &apiErr) && apiErr.Code == "request_too_large" {
			return execution{}, s.inputTooLarge()
		}
		return execution{}, err
	}
	var ex execution
	var err error
	if body.Input != nil && body.InputBase64 != nil {
		return execution{}, invalidRequest("send input or input_base64, not both")
	}
	switch {
	case body.Input != nil:
		ex.stdin = []byte(*body.Input)
	case body.InputBase64 != nil:
		if ex.stdin, err = base64.StdEncoding.DecodeString(*body.InputBase64); err != nil {
			return execution{}, invalidRequest("input_base64 is not valid base64")
		}
	}
	if int64(len(ex.stdin)) > s.cfg.MaxInputSize {
		return execution{}, s.inputTooLarge()
	}
	if ex.args, ex.env, err = checkArgsEnv(body.Args, body.Env); err != nil {
		return execution{}, err
	}
	if ex.timeout, ex.memory, err = s.limits(p, body.TimeoutMS, body.MemoryLimitBytes); err != nil {
		return execution{}, err
	}
	if body.ModuleID == "" {
		return execution{}, invalidRequest("module_id is required")
	}
	id, err := parseModuleID(body.ModuleID)
	if err != nil {
		return execution{}, err
	}
	if ex.module, err = s.modules.get(r.Context(), s.store, p, id); err != nil {
		return execution{}, moduleError(id, err)
	}
	return ex, nil
}

// readMultipartExecution reads the form variant: module_id, or a module
// file run once without keeping it; plus optional input (field or file).
func (s *Server) readMultipartExecution(c echo.Context, p auth.Principal) (execution, error) {
	moduleTooLarge := func() *Error {
		return newError(http.StatusRequestEntityTooLarge, "module_too_large",
			"module is larger than MAX_WASM_SIZE (%d bytes)", s.cfg.MaxWASMSize)
	}
	small := formField{limit: 1024, tooLarge: func() *Error { return invalidRequest("a form field is too long") }}
	fileField := formField{limit: s.cfg.MaxWASMSize, tooLarge: moduleTooLarge}
	parts, err := readMultipart(c.Request(), map[string]formField{
		"module_id": small, "file": fileField, "wasm": fileField,
		"input":      {limit: s.cfg.MaxInputSize, tooLarge: s.inputTooLarge},
		"timeout_ms": small, "memory_limit_bytes": small,
	})
	if err != nil {
		return execution{}, err
	}
	var ex execution
	ex.stdin = parts["input"].data
	timeoutMS, err := optionalInt(parts, "timeout_ms")
	if err != nil {
		return execution{}, err
	}
	memory, err := optionalInt(parts, "memory_limit_bytes")
	if err != nil {
		return execution{}, err
	}
	if ex.timeout, ex.memory, err = s.limits(p, timeoutMS, memory); err != nil {
		return execution{}, err
	}

	idPart, hasID := parts["module_id"]
	_, hasFile := parts["file"]
	_, hasWasm := parts["wasm"]
	switch {
	case hasID && (hasFile || hasWasm):
		return execution{}, invalidRequest("send module_id or a module file, not both")
	case hasID:
		id, err := parseModuleID(string(idPart.data))
		if err != nil {
			return execution{}, err
		}
		if ex.module, err = s.modules.get(c.Request().Context(), s.store, p, id); err != nil {
			return execution{}, moduleError(id, err)
		}
	case hasFile || hasWasm:
		file, err := moduleFilePart(parts)
		if err != nil {
			return execution{}, err
		}
		expires := time.Now().Add(s.cfg.AdhocModuleTTL).UTC()
		if ex.module, err = s.storeModule(c, p, uploadedModule{wasm: file.data, name: fileBaseName(file.filename)}, &expires); err != nil {
			return execution{}, err
		}
	default:
		return execution{}, invalidRequest("send module_id or a module in the field \"file\"")
	}
	return ex, nil
}

func optionalInt(parts map[string]formPart, name string) (*int64, error) {
	part, ok := parts[name]
	if !ok {
		return nil, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(part.data)), 10, 64)
	if err != nil {
		return nil, invalidRequest("%s must be a whole number", name)
	}
	return &n, nil
}

func (s *Server) inputTooLarge() *Error {
	return newError(http.StatusRequestEntityTooLarge, "input_too_large",
		"input is larger than MAX_INPUT_SIZE (%d bytes)", s.cfg.MaxInputSize)
}

// limits returns an execution's time and memory limits: the lowest of the
// tier's, the server's and the request's. A request may lower its limits,
// never raise them.
func (s *Server) limits(p auth.Principal, timeoutMS, memoryBytes *int64) (time.Duration, int64, error) {
	tier := s.cfg.Tier(p.Tier)
	maxTime := min(tier.MaxTime, s.cfg.ExecutionTimeout)
	maxMemory := min(tier.MaxMemory, s.cfg.MemoryLimit)
	timeout, memory := maxTime, maxMemory
	if timeoutMS != nil {
		if *timeoutMS < 1 || *timeoutMS > maxTime.Milliseconds() {
			return 0, 0, invalidRequest("timeout_ms must be from 1 to %d, the most your limits allow", maxTime.Milliseconds())
		}
		timeout = time.Duration(*timeoutMS) * time.Millisecond
	}
	if memoryBytes != nil {
		const page = 64 << 10
		if *memoryBytes < page || *memoryBytes > maxMemory {
			return 0, 0, invalidRequest("memory_limit_bytes must be from %d to %d, the most your limits allow", page, maxMemory)
		}
		memory = *memoryBytes
	}
	return timeout, memory, nil
}

// checkArgsEnv bounds argv and environ. NUL cannot be passed through WASI's
// C strings, and '=' cannot be in an environment name.
func checkArgsEnv(args []string, env map[string]string) ([]string, map[string]string, error) {
	if len(args) > maxArgs {
		return nil, nil, invalidRequest("at most %d args", maxArgs)
	}
	if len(env) > maxEnv {
		return nil, nil, invalidRequest("at most %d env entries", maxEnv)
	}
	total := 0
	for i, a := range args {
		if len(a) > maxArgBytes || strings.IndexByte(a, 0) >= 0 {
			return nil, nil, invalidRequest("args[%d] must be under %d bytes without NUL", i, maxArgBytes)
		}
		total += len(a)
	}
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || len(k)+len(v) > maxArgBytes || strings.IndexByte(v, 0) >= 0 {
			return nil, nil, invalidRequest("env %q: names are non-empty without '=' or NUL, values without NUL, each entry under %d bytes",
				truncate(k, 64), maxArgBytes)
		}
		total += len(k) + len(v)
	}
	if total > maxMetaBytes {
		return nil, nil, invalidRequest("args and env together must be under %d bytes", maxMetaBytes)
	}
	return args, env, nil
}
