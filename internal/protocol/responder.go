package protocol

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// DefaultMaxStdinBytes bounds a stdin fetched from the object store when the
// worker does not say otherwise.
const DefaultMaxStdinBytes = 16 << 20

// HopsHeader counts how many times busy workers forwarded a request.
const HopsHeader = "Wasmwiz-Hops"

// Responder is the worker's side of the protocol. It is safe for concurrent use.
type Responder struct {
	nc       *nats.Conn
	prefix   string
	payloads *payloads
	maxStdin int64
}

// NewResponder returns the worker side for one subject prefix. maxStdinBytes
// bounds a stdin taken from the object store (≤ 0: DefaultMaxStdinBytes); an
// inline stdin is bounded by the NATS max payload already.
func NewResponder(nc *nats.Conn, prefix string, maxStdinBytes int64) (*Responder, error) {
	if nc == nil {
		return nil, errors.New("protocol responder: nil NATS connection")
	}
	if err := validPrefix(prefix); err != nil {
		return nil, fmt.Errorf("protocol responder: %w", err)
	}
	p, err := newPayloads(nc, prefix)
	if err != nil {
		return nil, fmt.Errorf("protocol responder: %w", err)
	}
	if maxStdinBytes <= 0 {
		maxStdinBytes = DefaultMaxStdinBytes
	}
	return &Responder{nc: nc, prefix: prefix, payloads: p, maxStdin: maxStdinBytes}, nil
}

// Decode turns a message into a Request, taking (reading and deleting) a
// stdin that travelled through the object store. Garbage yields an error
// wrapping ErrMalformed, never a panic; even then the returned Request holds
// whatever ids could be read, for the log line. Inline stdin aliases
// msg.Data.
func (r *Responder) Decode(ctx context.Context, msg *nats.Msg) (Request, error) {
	req, ref, err := parseRequest(msg.Data)
	if err != nil {
		return req, err
	}
	if ref != nil {
		if req.Stdin, err = r.payloads.take(ctx, ref, r.maxStdin); err != nil {
			return req, fmt.Errorf("stdin: %w", err)
		}
	}
	return req, nil
}

// Respond sends rep as the answer to msg, spilling stdout, stderr or both to
// the object store when they would not fit one message. When even that fails
// it still answers, with an internal Failure, so that the requester does not
// wait in vain, and returns the error.
func (r *Responder) Respond(ctx context.Context, msg *nats.Msg, rep Reply) error {
	if msg.Reply == "" {
		return ErrNoReplySubject
	}
	body := bodies.Get().(*[]byte)
	data, err := r.encodeReply(ctx, rep, *body)
	if err != nil {
		failed := Reply{
			Worker:    rep.Worker,
			QueueTime: rep.QueueTime,
			Failure:   &Failure{Code: FailureInternal, Message: "worker could not send the output: " + err.Error()},
		}
		if data, ferr := r.encodeReply(ctx, failed, nil); ferr == nil {
			_ = msg.Respond(data)
		}
		return fmt.Errorf("reply: %w", err)
	}
	err = msg.Respond(data)
	releaseBody(body, data) // sent: nats.go holds a copy
	if err != nil {
		return fmt.Errorf("reply: %w", err)
	}
	return nil
}

// encodeReply frames rep into buf's space, spilling outputs to the payload
// bucket, largest first, until the rest fits one message.
func (r *Responder) encodeReply(ctx context.Context, rep Reply, buf []byte) ([]byte, error) {
	limit := r.nc.MaxPayload()
	env := newReplyEnvelope(rep)
	parts := [2]struct {
		data []byte
		kind string
		len  *int
		ref  **objectRef
	}{
		{rep.Stdout, "stdout", &env.StdoutLen, &env.StdoutObject},
		{rep.Stderr, "stderr", &env.StderrLen, &env.StderrObject},
	}
	if out := len(rep.Stdout) + len(rep.Stderr); int64(out) < limit {
		// Room for the usual reply, all inline, in one allocation at most.
		buf = grow(buf[:0], 512+len(rep.Error)+len(rep.Worker)+out)
	}
	for {
		meta := env.appendJSON(buf[:0])
		buf = meta
		size := len(meta) + 1
		big := -1
		for i, p := range parts {
			if *p.ref != nil {
				continue
			}
			size += len(p.data)
			if len(p.data) > 0 && (big < 0 || len(p.data) > len(parts[big].data)) {
				big = i
			}
		}
		if int64(size) <= limit {
			var inline [][]byte
			for _, p := range parts {
				if *p.ref == nil {
					inline = append(inline, p.data)
				}
			}
			return appendFrame(meta, inline...), nil
		}
		if big < 0 {
			return nil, fmt.Errorf("%w: %d bytes of metadata, max payload %d", ErrTooLarge, len(meta), limit)
		}
		// Spill the largest output first: often it alone makes room.
		ref, err := r.payloads.put(ctx, parts[big].kind, parts[big].data)
		if err != nil {
			for _, p := range parts {
				if *p.ref != nil {
					r.payloads.remove(ctx, *p.ref)
				}
			}
			return nil, fmt.Errorf("spill %s: %w", parts[big].kind, err)
		}
		*parts[big].ref = ref
		*parts[big].len = 0
	}
}

// Heartbeat tells the requester of msg that workerID still holds it (see
// WorkerLostAfter). It is a bodiless message on the reply subject.
func (r *Responder) Heartbeat(msg *nats.Msg, workerID string) error {
	if msg.Reply == "" {
		return ErrNoReplySubject
	}
	hb := &nats.Msg{Subject: msg.Reply, Header: nats.Header{HeartbeatHeader: []string{workerID}}}
	if err := r.nc.PublishMsg(hb); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

// Forward republishes a request the worker has no room for on the execution
// subject, with the same reply subject, so that another worker of the queue
// group may take it; the requester never notices. The hop count rides in a
// header; the body is unchanged (stdin objects are not read yet).
func (r *Responder) Forward(msg *nats.Msg) error {
	if msg.Reply == "" {
		return ErrNoReplySubject
	}
	fwd := &nats.Msg{
		Subject: ExecSubject(r.prefix),
		Reply:   msg.Reply,
		Header:  nats.Header{HopsHeader: []string{strconv.Itoa(Hops(msg) + 1)}},
		Data:    msg.Data,
	}
	if err := r.nc.PublishMsg(fwd); err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	return nil
}

// Hops is how many times msg was forwarded. A header that does not parse
// counts as a great many, so that a forged one cannot make a request bounce.
func Hops(msg *nats.Msg) int {
	v := msg.Header.Get(HopsHeader)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 1<<16 {
		return 1 << 16
	}
	return n
}

// AnswerPresence subscribes (outside any queue group, so every worker
// answers) to the presence subject, answering each ping with workerID.
// Unsubscribe the returned subscription to stop being counted.
func (r *Responder) AnswerPresence(workerID string) (*nats.Subscription, error) {
	id := []byte(workerID)
	sub, err := r.nc.Subscribe(PresenceSubject(r.prefix), func(m *nats.Msg) {
		_ = m.Respond(id)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe presence: %w", err)
	}
	return sub, nil
}
