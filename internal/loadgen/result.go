package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what a run measured. Latencies are in milliseconds. A request
// failed when no HTTP answer came (a transport error) or the answer was not
// 2xx; an execution's own status (trap, timeout…) is a success of the
// platform and is counted in ByExecStatus.
type Result struct {
	Mode        string    `json:"mode"` // "closed" or "open"
	Method      string    `json:"method"`
	URL         string    `json:"url"`
	Concurrency int       `json:"concurrency"`
	TargetRate  float64   `json:"target_rate,omitempty"`
	StartedAt   time.Time `json:"started_at"`
	ElapsedSec  float64   `json:"elapsed_s"`

	Requests   int64   `json:"requests"` // answered or failed
	Succeeded  int64   `json:"succeeded"`
	Failed     int64   `json:"failed"`
	Unsent     int64   `json:"unsent"` // open loop: due but never sent before the end
	Throughput float64 `json:"throughput_rps"`

	ByHTTPStatus    map[string]int64 `json:"by_http_status"`
	ByErrorCode     map[string]int64 `json:"by_error_code"`  // error.code of non-2xx JSON answers
	ByExecStatus    map[string]int64 `json:"by_exec_status"` // status of 2xx JSON answers
	TransportErrors map[string]int64 `json:"transport_errors"`
	FirstError      string           `json:"first_error,omitempty"`

	// Latency is from the send (closed loop) or the intended send (open
	// loop) to the end of the answer, over every request, failed or not.
	Latency Latency `json:"latency_ms"`
	// SendLag (open loop) is from the intended to the actual send: the
	// part of Latency spent waiting for a free caller or for the generator.
	SendLag *Latency `json:"send_lag_ms,omitempty"`
}

// Latency summarises a distribution, in milliseconds.
type Latency struct {
	Min    float64 `json:"min"`
	Mean   float64 `json:"mean"`
	StdDev float64 `json:"stddev"`
	P50    float64 `json:"p50"`
	P90    float64 `json:"p90"`
	P99    float64 `json:"p99"`
	P999   float64 `json:"p99_9"`
	Max    float64 `json:"max"`
}

// outcome is one request's end.
type outcome struct {
	status int // 0 when no answer came
	body   []byte
	err    error
}

// Histogram bounds: 1 µs to one hour at three significant digits, recorded
// in nanoseconds (~200 KB per histogram).
const (
	histLowest  = int64(time.Microsecond)
	histHighest = int64(time.Hour)
	histDigits  = 3
)

// recorder collects outcomes from every caller. One mutex is enough: it is
// held for a histogram increment and a map update, far below a request's
// cost, and avoids a histogram per caller.
type recorder struct {
	mu      sync.Mutex
	latency *hdrhistogram.Histogram
	lag     *hdrhistogram.Histogram // nil in closed loop
	// Exact extremes: the histogram rounds each value up to its bucket's
	// upper end, so its percentiles are clamped to these.
	minLatency, maxLatency time.Duration
	res                    Result
}

func newRecorder(open bool) *recorder {
	r := &recorder{latency: hdrhistogram.New(histLowest, histHighest, histDigits)}
	if open {
		r.lag = hdrhistogram.New(histLowest, histHighest, histDigits)
	}
	r.res.ByHTTPStatus = map[string]int64{}
	r.res.ByErrorCode = map[string]int64{}
	r.res.ByExecStatus = map[string]int64{}
	r.res.TransportErrors = map[string]int64{}
	return r
}

// answer is the part of a platform answer that is counted: the execution
// status of a 2xx, the error code of anything else (API.md's one error shape).
type answer struct {
	Status string          `json:"status"`
	Error  json.RawMessage `json:"error"`
}

func (r *recorder) record(o outcome, latency, lag time.Duration) {
	// Parse outside the lock.
	var status, code string
	if o.err == nil && len(o.body) > 0 && o.body[0] == '{' {
		var a answer
		if json.Unmarshal(o.body, &a) == nil {
			if o.status/100 == 2 {
				status = a.Status
			} else if len(a.Error) > 0 && a.Error[0] == '{' {
				var e struct {
					Code string `json:"code"`
				}
				if json.Unmarshal(a.Error, &e) == nil {
					code = e.Code
				}
			}
		}
	}
	var kind string
	if o.err != nil {
		kind = errorKind(o.err)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.latency.RecordValue(clamp(latency))
	if r.res.Requests == 0 || latency < r.minLatency {
		r.minLatency = latency
	}
	r.maxLatency = max(r.maxLatency, latency)
	if r.lag != nil {
		_ = r.lag.RecordValue(clamp(lag))
	}
	r.res.Requests++
	switch {
	case o.err != nil:
		r.res.Failed++
		r.res.TransportErrors[kind]++
		if r.res.FirstError == "" {
			r.res.FirstError = o.err.Error()
		}
		return
	case o.status/100 == 2:
		r.res.Succeeded++
		if status != "" {
			r.res.ByExecStatus[status]++
		}
	default:
		r.res.Failed++
		if code == "" {
			code = "(none)"
		}
		r.res.ByErrorCode[code]++
	}
	r.res.ByHTTPStatus[strconv.Itoa(o.status)]++
}

func clamp(d time.Duration) int64 {
	return min(max(int64(d), histLowest), histHighest)
}

// errorKind names a transport error by what an operator would look for.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection_reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EMFILE):
		return "out_of_sockets"
	}
	return "other"
}

// result freezes the run's figures; elapsed runs from start to the last
// answer.
func (r *recorder) result(cfg Config, start, last time.Time) *Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := r.res
	res.Mode = "closed"
	if cfg.Rate > 0 {
		res.Mode, res.TargetRate = "open", cfg.Rate
	}
	res.Method, res.URL, res.Concurrency, res.StartedAt = cfg.Request.Method, cfg.Request.URL, cfg.Concurrency, start.UTC()
	elapsed := last.Sub(start)
	if res.Requests == 0 || elapsed <= 0 {
		elapsed = time.Since(start)
	}
	res.ElapsedSec = elapsed.Seconds()
	if elapsed > 0 {
		res.Throughput = float64(res.Requests) / elapsed.Seconds()
	}
	res.Latency = summarise(r.latency).within(ms(int64(r.minLatency)), ms(int64(r.maxLatency)))
	if r.lag != nil {
		l := summarise(r.lag)
		res.SendLag = &l
	}
	return &res
}

func summarise(h *hdrhistogram.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Min: ms(h.Min()), Mean: h.Mean() / 1e6, StdDev: h.StdDev() / 1e6,
		P50: ms(h.ValueAtPercentile(50)), P90: ms(h.ValueAtPercentile(90)),
		P99: ms(h.ValueAtPercentile(99)), P999: ms(h.ValueAtPercentile(99.9)),
		Max: ms(h.Max()),
	}
}

// within clamps every figure of l into [lo, hi], the exact extremes.
func (l Latency) within(lo, hi float64) Latency {
	c := func(v float64) float64 { return min(max(v, lo), hi) }
	l.Min, l.P50, l.P90, l.P99, l.P999, l.Max = lo, c(l.P50), c(l.P90), c(l.P99), c(l.P999), hi
	l.Mean = c(l.Mean)
	return l
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }
