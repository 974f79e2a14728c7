package protocol

import (
	"bytes"
	"fmt"
	"sync"
	"time"
)

// The wire format of v1, request and reply alike, is one NATS message body:
//
//	<compact JSON envelope> '\n' <raw bytes>
//
// The envelope holds the metadata and the lengths of the raw parts; the raw
// bytes are the stdin (request) or stdout followed by stderr (reply), never
// base64. Compact JSON cannot contain a raw newline, so the first '\n' ends
// it. The metadata is not in NATS headers because header values must be ASCII
// (ADR-4) and args and env are arbitrary UTF-8.
const envelopeEnd = '\n'

// objectRef points at a body that travels through the payload bucket.
type objectRef struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

type requestEnvelope struct {
	ExecutionID      string            `json:"execution_id"`
	RequestID        string            `json:"request_id,omitempty"`
	ModuleID         string            `json:"module_id,omitempty"`
	ModuleSHA256     string            `json:"module_sha256"`
	ModuleName       string            `json:"module_name,omitempty"`
	Args             []string          `json:"args,omitempty"`
	Env              map[string]string `json:"env,omitempty"`
	Timeout          time.Duration     `json:"timeout_ns"`
	MemoryLimitBytes uint64            `json:"memory_limit_bytes"`
	MaxOutputBytes   int64             `json:"max_output_bytes"`
	StdinLen         int               `json:"stdin_len"`
	StdinObject      *objectRef        `json:"stdin_object,omitempty"`
}

type replyEnvelope struct {
	Status       string        `json:"status,omitempty"`
	ExitCode     uint32        `json:"exit_code"`
	Truncated    bool          `json:"truncated,omitempty"`
	Error        string        `json:"error,omitempty"`
	Duration     time.Duration `json:"duration_ns"`
	MemoryPeak   uint64        `json:"memory_peak_bytes"`
	QueueTime    time.Duration `json:"queue_ns"`
	CacheHit     bool          `json:"cache_hit,omitempty"`
	Worker       string        `json:"worker,omitempty"`
	Failure      *Failure      `json:"failure,omitempty"`
	StdoutLen    int           `json:"stdout_len"`
	StderrLen    int           `json:"stderr_len"`
	StdoutObject *objectRef    `json:"stdout_object,omitempty"`
	StderrObject *objectRef    `json:"stderr_object,omitempty"`
}

func newRequestEnvelope(r Request) requestEnvelope {
	return requestEnvelope{
		ExecutionID:      r.ExecutionID,
		RequestID:        r.RequestID,
		ModuleID:         r.ModuleID,
		ModuleSHA256:     r.ModuleSHA256,
		ModuleName:       r.ModuleName,
		Args:             r.Args,
		Env:              r.Env,
		Timeout:          r.Timeout,
		MemoryLimitBytes: r.MemoryLimitBytes,
		MaxOutputBytes:   r.MaxOutputBytes,
		StdinLen:         len(r.Stdin),
	}
}

// bodies recycles the buffers messages are built in. nats.go copies a body
// into its write buffer before Publish returns, so the bytes are free again
// as soon as the message is sent; building each body in a fresh buffer was
// a tenth of the api's allocated bytes.
var bodies = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledBody keeps the buffer of a large stdin or output out of the pool.
const maxPooledBody = 64 << 10

// releaseBody returns b, whose bytes have been sent, to the pool.
func releaseBody(bp *[]byte, b []byte) {
	if cap(b) > maxPooledBody {
		return
	}
	*bp = b[:0]
	bodies.Put(bp)
}

// appendFrame appends the envelope end and the raw parts to meta.
func appendFrame(meta []byte, parts ...[]byte) []byte {
	b := append(meta, envelopeEnd)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// frame joins an envelope and raw parts into one body.
func frame(meta []byte, parts ...[]byte) []byte {
	n := len(meta) + 1
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	b = append(b, meta...)
	b = append(b, envelopeEnd)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// unframe splits a body into its envelope and raw bytes.
func unframe(data []byte, env any) ([]byte, error) {
	i := bytes.IndexByte(data, envelopeEnd)
	if i < 0 {
		return nil, fmt.Errorf("%w: no envelope", ErrMalformed)
	}
	if err := decodeEnvelope(data[:i], env); err != nil {
		return nil, fmt.Errorf("%w: envelope: %w", ErrMalformed, err)
	}
	return data[i+1:], nil
}

// parseRequest decodes a request body without touching the network. When
// the stdin travels through the object store it returns its reference and
// leaves Stdin nil. On a validation error it still returns what it parsed,
// so that the worker can log the ids of a request it refuses.
func parseRequest(data []byte) (Request, *objectRef, error) {
	var env requestEnvelope
	rest, err := unframe(data, &env)
	if err != nil {
		return Request{}, nil, err
	}
	return env.request(rest)
}

// request checks a decoded envelope against the raw bytes that followed it.
func (env *requestEnvelope) request(rest []byte) (Request, *objectRef, error) {
	req := Request{
		ExecutionID:      env.ExecutionID,
		RequestID:        env.RequestID,
		ModuleID:         env.ModuleID,
		ModuleSHA256:     env.ModuleSHA256,
		ModuleName:       env.ModuleName,
		Args:             env.Args,
		Env:              env.Env,
		Timeout:          env.Timeout,
		MemoryLimitBytes: env.MemoryLimitBytes,
		MaxOutputBytes:   env.MaxOutputBytes,
	}
	// "[]" and "{}" mean what an absent field means.
	if len(req.Args) == 0 {
		req.Args = nil
	}
	if len(req.Env) == 0 {
		req.Env = nil
	}
	if env.StdinObject != nil {
		if err := env.StdinObject.check(len(rest), env.StdinLen); err != nil {
			return req, nil, fmt.Errorf("%w: stdin: %w", ErrMalformed, err)
		}
	} else {
		if env.StdinLen != len(rest) {
			return req, nil, fmt.Errorf("%w: stdin is %d bytes, envelope says %d", ErrMalformed, len(rest), env.StdinLen)
		}
		if len(rest) > 0 {
			req.Stdin = rest
		}
	}
	if err := req.Validate(); err != nil {
		return req, nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return req, env.StdinObject, nil
}

// check makes sure a reference is the whole story of its part: no inline
// bytes beside it, a name, a size that can be allocated.
func (o *objectRef) check(inline, inlineLen int) error {
	switch {
	case inline != 0 || inlineLen != 0:
		return fmt.Errorf("both inline (%d bytes) and in the object store", inline)
	case o.Name == "":
		return fmt.Errorf("object reference without a name")
	case o.Size < 0:
		return fmt.Errorf("object size %d", o.Size)
	}
	return nil
}

// parseReply decodes a reply body without touching the network; outputs that
// travel through the object store are returned as references.
func parseReply(data []byte) (rep Reply, stdout, stderr *objectRef, err error) {
	var env replyEnvelope
	rest, err := unframe(data, &env)
	if err != nil {
		return Reply{}, nil, nil, err
	}
	return env.reply(rest)
}

// reply checks a decoded envelope against the raw bytes that followed it.
func (env *replyEnvelope) reply(rest []byte) (rep Reply, stdout, stderr *objectRef, err error) {
	rep = Reply{
		Status:     env.Status,
		ExitCode:   env.ExitCode,
		Truncated:  env.Truncated,
		Error:      env.Error,
		Duration:   env.Duration,
		MemoryPeak: env.MemoryPeak,
		QueueTime:  env.QueueTime,
		CacheHit:   env.CacheHit,
		Worker:     env.Worker,
		Failure:    env.Failure,
	}
	if env.StdoutLen < 0 || env.StderrLen < 0 || env.StdoutLen+env.StderrLen != len(rest) {
		return Reply{}, nil, nil, fmt.Errorf("%w: outputs are %d bytes, envelope says %d+%d",
			ErrMalformed, len(rest), env.StdoutLen, env.StderrLen)
	}
	if env.StdoutObject != nil {
		if err := env.StdoutObject.check(0, env.StdoutLen); err != nil {
			return Reply{}, nil, nil, fmt.Errorf("%w: stdout: %w", ErrMalformed, err)
		}
	}
	if env.StderrObject != nil {
		if err := env.StderrObject.check(0, env.StderrLen); err != nil {
			return Reply{}, nil, nil, fmt.Errorf("%w: stderr: %w", ErrMalformed, err)
		}
	}
	if env.Failure == nil && env.Status == "" {
		return Reply{}, nil, nil, fmt.Errorf("%w: reply without status or failure", ErrMalformed)
	}
	if env.StdoutLen > 0 {
		rep.Stdout = rest[:env.StdoutLen:env.StdoutLen]
	}
	if env.StderrLen > 0 {
		rep.Stderr = rest[env.StdoutLen:]
	}
	return rep, env.StdoutObject, env.StderrObject, nil
}

func newReplyEnvelope(r Reply) replyEnvelope {
	return replyEnvelope{
		Status:     r.Status,
		ExitCode:   r.ExitCode,
		Truncated:  r.Truncated,
		Error:      r.Error,
		Duration:   r.Duration,
		MemoryPeak: r.MemoryPeak,
		QueueTime:  r.QueueTime,
		CacheHit:   r.CacheHit,
		Worker:     r.Worker,
		Failure:    r.Failure,
		StdoutLen:  len(r.Stdout),
		StderrLen:  len(r.Stderr),
	}
}
