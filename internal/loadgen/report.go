package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// WriteJSON writes r as one indented JSON document.
func WriteJSON(w io.Writer, r *Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

// WriteText writes r for a human, one figure per line.
func WriteText(w io.Writer, r *Result) error {
	var b strings.Builder
	mode := fmt.Sprintf("closed loop, concurrency %d", r.Concurrency)
	if r.Mode == "open" {
		mode = fmt.Sprintf("open loop, %.6g req/s intended, at most %d in flight", r.TargetRate, r.Concurrency)
	}
	fmt.Fprintf(&b, "%s %s (%s)\n", r.Method, r.URL, mode)
	fmt.Fprintf(&b, "  requests      %d in %.2fs = %.1f req/s (succeeded %d, failed %d)\n",
		r.Requests, r.ElapsedSec, r.Throughput, r.Succeeded, r.Failed)
	if r.Unsent > 0 {
		fmt.Fprintf(&b, "  unsent        %d due before the end but never sent: the target did not keep up with the rate\n", r.Unsent)
	}
	line := func(name string, m map[string]int64) {
		if len(m) == 0 {
			return
		}
		parts := make([]string, 0, len(m))
		for _, k := range slices.Sorted(maps.Keys(m)) {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
		fmt.Fprintf(&b, "  %-13s %s\n", name, strings.Join(parts, ", "))
	}
	line("http status", r.ByHTTPStatus)
	line("exec status", r.ByExecStatus)
	line("error code", r.ByErrorCode)
	line("transport", r.TransportErrors)
	if r.FirstError != "" {
		fmt.Fprintf(&b, "  first error   %s\n", r.FirstError)
	}
	from := "send"
	if r.Mode == "open" {
		from = "intended send"
	}
	l := r.Latency
	fmt.Fprintf(&b, "  latency ms    p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  (mean %.3f, min %.3f; from %s)\n",
		l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean, l.Min, from)
	if s := r.SendLag; s != nil {
		fmt.Fprintf(&b, "  send lag ms   p50 %.3f  p90 %.3f  p99 %.3f  max %.3f  (intended to actual send)\n",
			s.P50, s.P90, s.P99, s.Max)
	}
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}
