// Package loadgen drives a running WasmWiz platform over HTTP and measures
// it: closed loop (a fixed number of callers, each sending its next request
// when the last one answers) or open loop (a fixed arrival rate, latency
// measured from each request's intended send time so that a slow server
// cannot hide its queue by slowing the generator down: "coordinated
// omission"). It knows nothing of the platform's internals; cmd/loadgen
// wires it and scripts/load_test.sh and scripts/bench.sh drive it.
package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Request is what every call of a run sends.
type Request struct {
	Method string
	URL    string
	Header http.Header
	Body   []byte
}

// Config is one run.
type Config struct {
	Request Request
	// Concurrency is the number of callers in closed loop, and the most
	// requests in flight (connections) in open loop.
	Concurrency int
	// Rate is the open loop's arrivals per second; 0 means closed loop.
	Rate float64
	// Requests stops the run after this many requests; Duration stops it
	// from sending after this long. At least one is set; with both, the
	// first reached ends the run. Requests in flight always finish.
	Requests int64
	Duration time.Duration
	// Warmup runs a closed loop at Concurrency for this long before the
	// measured run and forgets its results: connections open, caches fill.
	Warmup time.Duration
	// Timeout bounds each request (default DefaultTimeout).
	Timeout time.Duration
	// Client, when set, sends the requests through net/http. By default
	// plain http goes through the lean client of rawhttp.go (one
	// connection per caller, far less CPU per request) and https through
	// NewClient(Concurrency).
	Client *http.Client
}

// DefaultTimeout covers the longest execution the pro tier allows plus the
// api's grace, so that a slow execution is measured, not cut.
const DefaultTimeout = 60 * time.Second

// maxBody bounds what is read of a response; the rest is drained unread so
// the connection is kept. An execute answer holds up to MAX_OUTPUT_SIZE
// (1 MiB by default) each of stdout and stderr, perhaps in base64.
const maxBody = 8 << 20

// NewClient returns a keep-alive client that keeps enough idle connections
// for conns callers, never uses a proxy and never asks for compression
// (the platform's answers are small and compression would measure gzip).
func NewClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns + 16,
		MaxIdleConnsPerHost: conns + 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
}

func (c *Config) validate() error {
	switch {
	case c.Request.URL == "":
		return errors.New("no URL")
	case c.Concurrency < 1:
		return fmt.Errorf("concurrency %d: want at least 1", c.Concurrency)
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return fmt.Errorf("rate %v: want a positive number of requests per second, or 0 for closed loop", c.Rate)
	case c.Requests < 0 || c.Duration < 0 || c.Warmup < 0 || c.Timeout < 0:
		return errors.New("negative requests, duration, warmup or timeout")
	case c.Requests == 0 && c.Duration == 0:
		return errors.New("neither a request count nor a duration: the run would never end")
	}
	return nil
}

// Run measures one run. When ctx ends early it returns what was measured
// so far together with ctx's error.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Request.Method == "" {
		cfg.Request.Method = http.MethodGet
	}
	var raw []byte
	var addr string
	if cfg.Client == nil {
		var err error
		if addr, raw, err = renderRequest(cfg.Request); err != nil {
			cfg.Client = NewClient(cfg.Concurrency)
		}
	}
	if cfg.Warmup > 0 {
		warm := cfg
		warm.Rate, warm.Requests, warm.Duration = 0, 0, cfg.Warmup
		g := newGen(warm, addr, raw)
		g.warm = true
		g.closedLoop(ctx, time.Now())
	}
	g := newGen(cfg, addr, raw)
	start := time.Now()
	if cfg.Rate > 0 {
		g.openLoop(ctx, start)
	} else {
		g.closedLoop(ctx, start)
	}
	res := g.rec.result(cfg, start, g.lastDone())
	res.Unsent = g.unsent
	return res, ctx.Err()
}

// gen is one run in progress.
type gen struct {
	cfg    Config
	addr   string // the lean client's: host:port
	raw    []byte // the lean client's: the rendered request; nil for net/http
	rec    *recorder
	issued atomic.Int64 // closed loop: requests claimed against cfg.Requests
	last   atomic.Int64 // UnixNano of the last completion
	unsent int64        // open loop: intended sends that never went out
	warm   bool         // every caller sends at least once, to open its connection
}

func newGen(cfg Config, addr string, raw []byte) *gen {
	return &gen{cfg: cfg, addr: addr, raw: raw, rec: newRecorder(cfg.Rate > 0)}
}

// sender sends the run's request for one caller.
type sender interface {
	send(ctx context.Context, buf []byte) (outcome, []byte)
	close()
}

func (g *gen) newSender() sender {
	if g.raw != nil {
		return &rawSender{addr: g.addr, req: g.raw, timeout: g.cfg.Timeout}
	}
	return stdSender{g}
}

func (g *gen) lastDone() time.Time { return time.Unix(0, g.last.Load()) }

// claim reports whether a closed-loop caller may send one more request.
func (g *gen) claim(deadline time.Time) bool {
	if g.cfg.Duration > 0 && !time.Now().Before(deadline) {
		return false
	}
	return g.cfg.Requests == 0 || g.issued.Add(1) <= g.cfg.Requests
}

func (g *gen) closedLoop(ctx context.Context, start time.Time) {
	deadline := start.Add(g.cfg.Duration)
	var wg sync.WaitGroup
	for range g.cfg.Concurrency {
		wg.Go(func() {
			s := g.newSender()
			defer s.close()
			buf := make([]byte, 0, 4096)
			for first := true; ctx.Err() == nil && (first && g.warm || g.claim(deadline)); first = false {
				sent := time.Now()
				var o outcome
				o, buf = s.send(ctx, buf)
				done := time.Now()
				g.last.Store(done.UnixNano())
				g.rec.record(o, done.Sub(sent), 0)
			}
		})
	}
	wg.Wait()
}

// intended returns how many sends the open loop schedules, and the offset
// from the start of the i-th.
func (g *gen) schedule() (total int64, at func(i int64) time.Duration) {
	at = func(i int64) time.Duration { return time.Duration(float64(i) * float64(time.Second) / g.cfg.Rate) }
	total = math.MaxInt64
	if g.cfg.Requests > 0 {
		total = g.cfg.Requests
	}
	if g.cfg.Duration > 0 {
		// Sends due strictly before the end: i/rate < duration.
		byTime := int64(math.Ceil(g.cfg.Duration.Seconds() * g.cfg.Rate))
		for byTime > 0 && at(byTime-1) >= g.cfg.Duration {
			byTime--
		}
		for at(byTime) < g.cfg.Duration {
			byTime++
		}
		total = min(total, byTime)
	}
	return total, at
}

// openLoop sends on a fixed schedule. A send whose time has come waits for
// a free caller, and its latency counts from when it should have gone out:
// the wait is the queueing a real client arriving then would have seen.
// With a duration, sends still waiting at the end are counted as unsent
// rather than sent late, so the run ends on time.
func (g *gen) openLoop(ctx context.Context, start time.Time) {
	jobs := make(chan time.Time)
	var wg sync.WaitGroup
	for range g.cfg.Concurrency {
		wg.Go(func() {
			s := g.newSender()
			defer s.close()
			buf := make([]byte, 0, 4096)
			for due := range jobs {
				sent := time.Now()
				var o outcome
				o, buf = s.send(ctx, buf)
				done := time.Now()
				g.last.Store(done.UnixNano())
				g.rec.record(o, done.Sub(due), sent.Sub(due))
			}
		})
	}

	total, at := g.schedule()
	var end <-chan time.Time
	if g.cfg.Duration > 0 {
		t := time.NewTimer(time.Until(start.Add(g.cfg.Duration)))
		defer t.Stop()
		end = t.C
	}
	wait := time.NewTimer(0)
	<-wait.C
	var sent int64
send:
	for ; sent < total; sent++ {
		due := start.Add(at(sent))
		if d := time.Until(due); d > 0 {
			wait.Reset(d)
			select {
			case <-wait.C:
			case <-ctx.Done():
				wait.Stop()
				break send
			}
		}
		select {
		case jobs <- due:
		case <-end:
			break send
		case <-ctx.Done():
			break send
		}
	}
	close(jobs)
	wg.Wait()
	if total != math.MaxInt64 {
		g.unsent = total - sent
	}
}

// stdSender sends through net/http; its connections are the client's.
type stdSender struct{ g *gen }

func (stdSender) close() {}

// send sends one request and reads its answer into buf.
func (s stdSender) send(ctx context.Context, buf []byte) (outcome, []byte) {
	g := s.g
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	r := g.cfg.Request
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, r.URL, body)
	if err != nil {
		return outcome{err: err}, buf
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	resp, err := g.cfg.Client.Do(req)
	if err != nil {
		return outcome{err: err}, buf
	}
	defer resp.Body.Close()
	buf, err = readBody(resp.Body, buf[:0])
	if err != nil {
		return outcome{status: resp.StatusCode, err: err}, buf
	}
	return outcome{status: resp.StatusCode, body: buf}, buf
}

// readBody reads up to maxBody bytes into buf and drains the rest.
func readBody(r io.Reader, buf []byte) ([]byte, error) {
	lr := io.LimitedReader{R: r, N: maxBody}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return buf, err
		}
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return buf, err
	}
	return buf, nil
}
