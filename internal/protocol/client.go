package protocol

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
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
//
// Replies come to one wildcard inbox subscription of the client's own (as
// with nats.go's Request), but unlike Request it keeps listening after the
// first message: a worker holding a request sends heartbeats to its reply
// subject, and a watchdog fails the requests that went silent (see
// WorkerLostAfter), so a killed worker costs its requesters about a second,
// not their whole time limit.
type Client struct {
	nc       *nats.Conn
	subject  string
	presence string
	payloads *payloads

	mu    sync.Mutex
	sub   *nats.Subscription // the reply inbox; nil until the first Execute
	inbox string             // reply subjects are inbox + a token
	calls map[string]*call
	next  atomic.Uint64
	// disrupted is when the watchdog last saw the connection down or
	// reconnected (a mono reading), to tell a silent worker from a silent
	// link.
	disrupted atomic.Int64
}

// call is one Execute waiting for its reply.
type call struct {
	res  chan callResult // buffered 1: the first outcome wins, later ones are dropped
	sent int64           // mono of the publish
	last atomic.Int64    // mono of the publish or the latest heartbeat
}

type callResult struct {
	msg *nats.Msg
	err error
}

func (c *call) deliver(r callResult) {
	select {
	case c.res <- r:
	default:
	}
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
	return &Client{
		nc: nc, subject: ExecSubject(prefix), presence: PresenceSubject(prefix), payloads: p,
		calls: make(map[string]*call),
	}, nil
}

// Execute sends req to one worker and waits for its reply until ctx ends
// (the api sets the execution's timeout plus a grace; without a deadline,
// Timeout+DefaultGrace applies).
//
// A reply with Failure set is returned with a nil error: the worker answered.
// Errors wrap ErrNoWorkers (nobody subscribed; immediate), ErrWorkerLost
// (silence for WorkerLostAfter: no reply, no heartbeat), ErrTimeout (no
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
	inbox, err := c.replyInbox()
	if err != nil {
		return Reply{}, fmt.Errorf("execute %s: %w", req.ExecutionID, err)
	}
	body := bodies.Get().(*[]byte)
	data, stdinRef, err := c.encodeRequest(ctx, req, *body)
	if err != nil {
		return Reply{}, fmt.Errorf("execute %s: %w", req.ExecutionID, mapWaitErr(err))
	}
	msg, err := c.roundTrip(ctx, inbox, data)
	releaseBody(body, data) // published: nats.go holds a copy
	if err != nil {
		if stdinRef != nil {
			// Nobody, or nobody in time, took the stdin; a worker that still
			// gets to it answers a requester that has gone. The answer does
			// not wait for the delete: the bucket's TTL removes what fails.
			go func() {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
				defer cancel()
				c.payloads.remove(cctx, stdinRef)
			}()
		}
		return Reply{}, fmt.Errorf("execute %s: %w", req.ExecutionID, mapWaitErr(err))
	}
	rep, err := c.decodeReply(ctx, msg.Data, req.MaxOutputBytes)
	if err != nil {
		return Reply{}, fmt.Errorf("execute %s: reply from worker: %w", req.ExecutionID, mapWaitErr(err))
	}
	return rep, nil
}

// roundTrip publishes data with a reply subject of its own and waits for the
// reply, a no-responders status, the watchdog's verdict, or ctx.
func (c *Client) roundTrip(ctx context.Context, inbox string, data []byte) (*nats.Msg, error) {
	token := strconv.FormatUint(c.next.Add(1), 36)
	cl := &call{res: make(chan callResult, 1), sent: mono(time.Now())}
	cl.last.Store(cl.sent)
	c.mu.Lock()
	c.calls[token] = cl
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.calls, token)
		c.mu.Unlock()
	}()
	if err := c.nc.PublishRequest(c.subject, inbox+token, data); err != nil {
		return nil, err
	}
	select {
	case r := <-cl.res:
		return r.msg, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// replyInbox subscribes the reply inbox on first use and starts its
// watchdog; later calls return the inbox's subject prefix.
func (c *Client) replyInbox() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sub != nil {
		return c.inbox, nil
	}
	inbox := c.nc.NewInbox() + "."
	// Set before the subscription exists: onReply reads it unlocked.
	c.inbox = inbox
	sub, err := c.nc.Subscribe(inbox+"*", c.onReply)
	if err != nil {
		return "", fmt.Errorf("subscribe reply inbox: %w", err)
	}
	// The handler only hands messages over; a pending limit would turn a
	// burst of large replies into silently dropped ones.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return "", fmt.Errorf("reply inbox pending limits: %w", err)
	}
	c.sub = sub
	go c.watch()
	return inbox, nil
}

// onReply routes a message on the reply inbox to its call: a heartbeat
// renews the call's liveness, anything else ends it.
func (c *Client) onReply(m *nats.Msg) {
	if len(m.Subject) <= len(c.inbox) {
		return
	}
	c.mu.Lock()
	cl := c.calls[m.Subject[len(c.inbox):]]
	c.mu.Unlock()
	if cl == nil {
		return // the call ended (timeout, client gone); the reply is late
	}
	// A reply always has a body: only the bodiless messages carry meaning
	// in their headers.
	if len(m.Data) == 0 && m.Header != nil {
		if m.Header.Get(HeartbeatHeader) != "" {
			cl.last.Store(mono(time.Now()))
			return
		}
		if m.Header.Get("Status") == "503" {
			cl.deliver(callResult{err: nats.ErrNoResponders})
			return
		}
	}
	cl.deliver(callResult{msg: m})
}

// watch fails the calls that have been silent for WorkerLostAfter, until the
// connection closes: ErrConnectionLost when the connection itself was
// interrupted since the call was sent, ErrWorkerLost otherwise.
func (c *Client) watch() {
	t := time.NewTicker(HeartbeatInterval)
	defer t.Stop()
	w := watchdog{reconnects: c.nc.Stats().Reconnects, prev: time.Now()}
	for now := range t.C {
		if c.nc.IsClosed() {
			return
		}
		r := c.nc.Stats().Reconnects
		c.sweep(&w, now, r != w.reconnects || !c.nc.IsConnected())
		w.reconnects = r
	}
}

// watchdog is what watch remembers from one sweep to the next.
type watchdog struct {
	reconnects uint64
	prev       time.Time
}

// sweep is one round of the watchdog at now; disrupted says the
// connection is down or reconnected since the last round.
func (c *Client) sweep(w *watchdog, now time.Time, disrupted bool) {
	// Silence is evidence only if this process was running to hear it:
	// after a stall (a paused or starved process, a long GC) heartbeats
	// may wait unread in the socket, so the silence starts again now.
	late := now.Sub(w.prev) > 2*HeartbeatInterval
	w.prev = now
	// Recorded even in a late round: watch moves on past this reconnect,
	// and a call silent after it must still hear ErrConnectionLost.
	if disrupted {
		c.disrupted.Store(mono(now))
	}
	if late {
		c.mu.Lock()
		for _, cl := range c.calls {
			cl.last.Store(max(cl.last.Load(), mono(now)))
		}
		c.mu.Unlock()
		return
	}
	lastDisruption := c.disrupted.Load()
	silentSince := mono(now.Add(-WorkerLostAfter))
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cl := range c.calls {
		if cl.last.Load() >= silentSince {
			continue
		}
		err := ErrWorkerLost
		if lastDisruption >= cl.sent {
			err = ErrConnectionLost
		}
		cl.deliver(callResult{err: err})
	}
}

// clockBase anchors mono.
var clockBase = time.Now()

// mono is t on the monotonic clock, in nanoseconds since clockBase, so that
// the watchdog's silences are immune to steps of the wall clock (an NTP
// correction or a resumed VM would otherwise fail every call in flight).
// t must carry a monotonic reading: time.Now's, or one derived from it.
func mono(t time.Time) int64 { return int64(t.Sub(clockBase)) }

func mapWaitErr(err error) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return ErrNoWorkers
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return err
}

// encodeRequest frames req into buf's space, spilling the stdin to the
// payload bucket when the whole would not fit the server's max payload
// (minus forwardHeadroom).
func (c *Client) encodeRequest(ctx context.Context, req Request, buf []byte) ([]byte, *objectRef, error) {
	limit := c.nc.MaxPayload() - forwardHeadroom
	env := newRequestEnvelope(req)
	if int64(len(req.Stdin)) < limit {
		buf = grow(buf[:0], env.sizeHint()+1+len(req.Stdin))
	}
	meta := env.appendJSON(buf[:0])
	if int64(len(meta)+1+len(req.Stdin)) <= limit {
		return appendFrame(meta, req.Stdin), nil, nil
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
	return appendFrame(env.appendJSON(meta[:0])), ref, nil
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
