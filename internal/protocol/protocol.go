// Package protocol defines what crosses NATS between the api and the workers:
// the versioned execution request and reply, the presence ping that counts
// workers, and how a body too large for the server's max payload travels
// through a JetStream object store instead. The api uses Client, the worker
// uses Responder; the two programs import this package and nothing else of
// each other. It knows nothing of wazero, HTTP or SQL, and it does not log.
package protocol

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Subjects are versioned so that a v2 message can be introduced next to v1
// while old and new workers share one NATS.

// ExecSubject is the subject execution requests are sent on.
func ExecSubject(prefix string) string { return prefix + ".exec.v1" }

// QueueGroup is the queue group workers subscribe to ExecSubject in, so that
// NATS hands each request to one worker.
func QueueGroup(prefix string) string { return prefix + "-workers" }

// PresenceSubject is the subject every worker answers (outside any queue
// group) with its id, so that one request with many replies counts them.
func PresenceSubject(prefix string) string { return prefix + ".presence.v1" }

// PayloadBucket is the JetStream object store bucket holding the bodies too
// large to travel inline. Bucket names allow fewer characters than subjects,
// so anything else in the prefix becomes '_'.
func PayloadBucket(prefix string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, prefix) + "-payloads"
}

// PayloadTTL bounds how long an object the reader never took (its requester
// gave up, a worker died) stays in the bucket. It must exceed the longest
// execution wait; readers delete what they read long before.
const PayloadTTL = 5 * time.Minute

// Request asks a worker to run a module once.
type Request struct {
	ExecutionID string // the usage record's id; echoed in worker logs
	RequestID   string // the HTTP request id, for log correlation
	ModuleID    string
	// ModuleSHA256 is the lowercase hex SHA-256 of the module bytes: the key
	// of the worker's compile cache and of the blob in PostgreSQL.
	ModuleSHA256     string
	ModuleName       string // argv[0]
	Args             []string
	Env              map[string]string
	Timeout          time.Duration
	MemoryLimitBytes uint64
	MaxOutputBytes   int64 // per stream: stdout and stderr each
	Stdin            []byte
}

// Failure is a worker's report that it could not run the module at all, as
// opposed to a module that ran and failed (which is a Status).
type Failure struct {
	Code    FailureCode `json:"code"`
	Message string      `json:"message"`
}

// FailureCode is a stable word the api maps to an HTTP status.
type FailureCode string

// The failure codes. The api maps them to 404, 400 and 502.
const (
	FailureModuleNotFound FailureCode = "module_not_found"
	FailureInvalidModule  FailureCode = "invalid_module"
	FailureInternal       FailureCode = "internal"
)

// Reply is a worker's answer. When Failure is set the module did not run and
// only Worker and QueueTime are meaningful.
type Reply struct {
	Status     string // ok, exit, trap, timeout, memory_limit (runner's statuses)
	ExitCode   uint32
	Stdout     []byte
	Stderr     []byte
	Truncated  bool
	Error      string
	Duration   time.Duration // the module's own run time
	MemoryPeak uint64        // bytes of linear memory at its largest
	// QueueTime is the time from the worker receiving the message to starting
	// the module: slot wait, stdin fetch and module load or compile.
	QueueTime time.Duration
	CacheHit  bool // the compiled module came from the worker's cache
	Worker    string
	Failure   *Failure
}

// Errors of the protocol. Client.Execute wraps them; test with errors.Is.
var (
	// ErrNoWorkers: no worker is subscribed. NATS says so at once.
	ErrNoWorkers = errors.New("no workers subscribed")
	// ErrTimeout: no reply came before the caller's context expired.
	ErrTimeout = errors.New("no reply from a worker in time")
	// ErrMalformed: a message that does not follow this protocol.
	ErrMalformed = errors.New("malformed message")
	// ErrTooLarge: the request's metadata (args, env) alone exceeds the NATS
	// max payload. Only bodies (stdin, output) spill to the object store.
	ErrTooLarge = errors.New("message metadata exceeds the NATS max payload")
	// ErrNoReplySubject: a request that nobody waits for.
	ErrNoReplySubject = errors.New("message has no reply subject")
	// ErrWorkerLost: the request went silent — no reply and no heartbeat for
	// WorkerLostAfter. The worker holding it died, or lost NATS, or the
	// message was lost with a worker before one took it.
	ErrWorkerLost = errors.New("the worker holding the request stopped answering")
	// ErrConnectionLost: the request went silent while the requester's own
	// NATS connection was down or reconnecting; whether the execution ran
	// is unknown (its reply may have been sent while nobody listened).
	ErrConnectionLost = errors.New("the connection to NATS was interrupted while waiting for the reply")
)

// Liveness of a request in flight. A worker sends a heartbeat (an empty
// message with HeartbeatHeader set to its id) to the reply subject of every
// request it holds, running or waiting for a slot, once the request is
// HeartbeatAfter old and then every HeartbeatInterval. A requester that
// hears nothing at all — no reply, no heartbeat — for WorkerLostAfter gives
// up with ErrWorkerLost instead of waiting out the execution's whole time
// limit. Short executions reply before their first heartbeat is due, so the
// hot path carries no extra message.
//
// The margins are wide on purpose: the first heartbeat is due at most
// HeartbeatAfter+HeartbeatInterval (350 ms) after the worker received the
// request, and WorkerLostAfter leaves over a second beyond that for a busy
// machine's scheduling delays, so a slow worker is not mistaken for a dead one.
const (
	HeartbeatHeader   = "Wasmwiz-Heartbeat"
	HeartbeatAfter    = 100 * time.Millisecond
	HeartbeatInterval = 250 * time.Millisecond
	WorkerLostAfter   = 1500 * time.Millisecond
)

// Limits of the metadata, generous for ids and names the api makes, tight
// enough that hostile metadata cannot bloat worker logs.
const (
	maxIDLen   = 128
	maxNameLen = 256
)

// Validate reports the first problem that would make a worker refuse the
// request. The api may call it before sending to answer 400 instead of 502.
func (r Request) Validate() error {
	switch {
	case r.ExecutionID == "" || len(r.ExecutionID) > maxIDLen:
		return fmt.Errorf("execution id must have 1 to %d bytes", maxIDLen)
	case len(r.RequestID) > maxIDLen:
		return fmt.Errorf("request id longer than %d bytes", maxIDLen)
	case len(r.ModuleID) > maxIDLen:
		return fmt.Errorf("module id longer than %d bytes", maxIDLen)
	case !isSHA256Hex(r.ModuleSHA256):
		return errors.New("module sha256 must be 64 lowercase hex digits")
	case len(r.ModuleName) > maxNameLen || strings.IndexByte(r.ModuleName, 0) >= 0:
		return fmt.Errorf("module name must have at most %d bytes and no NUL", maxNameLen)
	case r.Timeout <= 0:
		return errors.New("timeout must be positive")
	case r.MemoryLimitBytes == 0:
		return errors.New("memory limit must be positive")
	case r.MaxOutputBytes <= 0:
		return errors.New("max output bytes must be positive")
	}
	// WASI passes args and env as NUL-terminated C strings, and env as
	// KEY=VALUE pairs: anything else cannot reach the module intact.
	for i, a := range r.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("args[%d] contains NUL", i)
		}
	}
	for k, v := range r.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("env name %q must be non-empty without '=' or NUL", k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("env %s value contains NUL", k)
		}
	}
	return nil
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// validPrefix rejects prefixes that would make subjects with wildcards,
// whitespace or empty tokens.
func validPrefix(prefix string) error {
	if prefix == "" {
		return errors.New("subject prefix is empty")
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return fmt.Errorf("subject prefix %q is not a literal NATS subject", prefix)
		}
	}
	return nil
}
