package protocol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultGrace is added to a request's Timeout to bound Execute when the
// caller's context has no deadline of its own.
const DefaultGrace = 5 * time.Second

// forwardHeadroom is left free in every inline request so that a busy worker
// can forward it to another with a small header (see Responder.Forward).
const forwardHeadroom = 64

// cleanupTimeout bounds the best-effort deletion of a stdin object nobody
// took; it runs after the caller's context may already have ended.
const cleanupTimeout = 5 * time.Second

// Client is the api's side of the protocol. It is safe for concurrent use.
type Client struct {
	nc       *nats.Conn
	subject  string
	presence string
	payloads *payloads
}

// NewClient returns a client for the workers of one subject prefix. It does
// no I/O: the payload bucket is bound the first time a body needs it.
func NewClient(nc *nats.Conn, prefix string) (*Client, error) {
	if nc == nil {
		return nil, errors.New("protocol client: nil NATS connection")
	}
	if err := validPrefix(prefix); err != nil {
		return nil, fmt.Errorf("protocol client: %w", err)
	}
	p, err := newPayloads(nc, prefix)
	if err != nil {
		return nil, fmt.Errorf("protocol client: %w", err)
	}
	return &Client{nc: nc, subject: ExecSubject(prefix), presence: PresenceSubject(prefix), payloads: p}, nil
}

// Execute sends req to one worker and waits for its reply until ctx ends
// (the api sets the execution's timeout plus a grace; without a deadline,
// Timeout+DefaultGrace applies).
//
// A reply with Failure set is returned with a nil error: the worker answered.
// Errors wrap ErrNoWorkers (nobody subscribed; immediate), ErrTimeout (no
// reply in time), a Validate problem, ErrTooLarge, or a NATS, JetStream or
// ErrMalformed failure (a garbled reply).
func (c *Client) Execute(ctx context.Context, req Request) (Reply, error) {
	if err := req.Validate(); err != nil {
		return Reply{}, fmt.Errorf("execute %s: %w", req.ExecutionID, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, req.Timeout+DefaultGrace)
		defer cancel()
	}
	data, stdinRef, err := c.encodeRequest(ctx, req)
	if err != nil {
		return Reply{}, fmt.Errorf("execute %s: %w", req.ExecutionID, mapWaitErr(err))
	}
	msg, err := c.nc.RequestWithContext(ctx, c.subject, data)
	if err != nil {
		if stdinRef != nil {
			// Nobody, or nobody in time, took the stdin; a worker that still
			// gets to it answers a requester that has gone.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			c.payloads.remove(cctx, stdinRef)
			cancel()
		}
		return Reply{}, fmt.Errorf("execute %s: %w", req.ExecutionID, mapWaitErr(err))
	}
	rep, err := c.decodeReply(ctx, msg.Data, req.MaxOutputBytes)
	if err != nil {
		return Reply{}, fmt.Errorf("execute %s: reply from worker: %w", req.ExecutionID, mapWaitErr(err))
	}
	return rep, nil
}

func mapWaitErr(err error) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return ErrNoWorkers
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return err
}

// encodeRequest frames req, spilling the stdin to the payload bucket when the
// whole would not fit the server's max payload (minus forwardHeadroom).
func (c *Client) encodeRequest(ctx context.Context, req Request) ([]byte, *objectRef, error) {
	limit := c.nc.MaxPayload() - forwardHeadroom
	env := newRequestEnvelope(req)
	meta, err := json.Marshal(env)
	if err != nil {
		return nil, nil, err
	}
	if int64(len(meta)+1+len(req.Stdin)) <= limit {
		return frame(meta, req.Stdin), nil, nil
	}
	// The reference replaces the stdin in the envelope: a name of ~30 bytes
	// and a size. If even that cannot fit, args or env are too big.
	const refOverhead = 96
	if int64(len(meta)+1+refOverhead) > limit {
		return nil, nil, fmt.Errorf("%w: %d bytes of metadata, max payload %d", ErrTooLarge, len(meta), c.nc.MaxPayload())
	}
	ref, err := c.payloads.put(ctx, "stdin", req.Stdin)
	if err != nil {
		return nil, nil, fmt.Errorf("spill stdin: %w", err)
	}
	env.StdinLen = 0
	env.StdinObject = ref
	if meta, err = json.Marshal(env); err != nil {
		return nil, nil, err
	}
	return frame(meta), ref, nil
}

func (c *Client) decodeReply(ctx context.Context, data []byte, maxOutput int64) (Reply, error) {
	rep, outRef, errRef, err := parseReply(data)
	if err != nil {
		return Reply{}, err
	}
	// Take both even if the first fails, so that neither outlives the reply.
	var outErr, errErr error
	if outRef != nil {
		rep.Stdout, outErr = c.payloads.take(ctx, outRef, maxOutput)
	}
	if errRef != nil {
		rep.Stderr, errErr = c.payloads.take(ctx, errRef, maxOutput)
	}
	if err := errors.Join(outErr, errErr); err != nil {
		return Reply{}, fmt.Errorf("outputs: %w", err)
	}
	return rep, nil
}

// CountWorkers asks every worker to answer the presence subject and counts
// the distinct ids that answer within window (or until ctx ends, if sooner).
// Only a cancelled ctx is an error; an expired one just ends the count.
func (c *Client) CountWorkers(ctx context.Context, window time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return 0, fmt.Errorf("count workers: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := c.nc.PublishRequest(c.presence, inbox, nil); err != nil {
		return 0, fmt.Errorf("count workers: %w", err)
	}
	ids := make(map[string]struct{})
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return len(ids), nil
		case errors.Is(err, nats.ErrNoResponders):
			// With nobody subscribed the server answers at once, with a 503
			// status: zero, and no need to wait out the window.
			return 0, nil
		case err != nil:
			return len(ids), fmt.Errorf("count workers: %w", err)
		}
		ids[string(msg.Data)] = struct{}{}
	}
}
