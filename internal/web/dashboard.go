package web

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/wasmwiz/wasmwiz/internal/store"
)

// The dashboard covers the last day in hourly bars, and lists this many
// of the latest executions.
const (
	dashboardWindow  = 24 * time.Hour
	dashboardBuckets = 24
	dashboardRecent  = 10
	workersTimeout   = 2 * time.Second
)

type dashboardView struct {
	Scope       string
	Modules     int64
	Executions  int64
	SuccessRate string
	P50, P95    string
	Workers     string
	WorkersOK   bool
	Chart       chart
	Recent      []recentView
	ShowOwner   bool
}

type recentView struct {
	ID, Owner, Module, Status, StatusClass, ExitCode, Duration, When, WhenISO string
}

func scopeOf(s *session) (store.Scope, string) {
	if s.p.IsAdmin() {
		return store.AllOwners(), "all owners"
	}
	return store.Owner(s.p.Owner), "owner " + s.p.Owner
}

func (h *Handler) dashboard(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	// The worker count waits for presence answers: ask while the database
	// is queried.
	workers := make(chan string, 1)
	go func() { workers <- h.countWorkers(ctx) }()

	until := h.now().UTC()
	since := until.Add(-dashboardWindow)
	scope, scopeName := scopeOf(s)
	d, err := h.store.Dashboard(ctx, scope, since, until, dashboardBuckets, dashboardRecent)
	if err != nil {
		<-workers
		return err
	}
	v := dashboardView{
		Scope: scopeName, Modules: d.Modules, Executions: d.Usage.Executions,
		SuccessRate: "—", P50: "—", P95: "—", ShowOwner: s.p.IsAdmin(),
		Chart: newChart(d.Buckets, until),
	}
	if d.Usage.Executions > 0 {
		ok := d.Usage.ByStatus["ok"]
		v.SuccessRate = strconv.FormatFloat(100*float64(ok)/float64(d.Usage.Executions), 'f', 1, 64) + " %"
		v.P50, v.P95 = humanMS(d.Usage.DurationP50MS), humanMS(d.Usage.DurationP95MS)
	}
	for _, e := range d.Recent {
		rv := recentView{
			ID: e.ID.String(), Owner: e.Owner, Status: e.Status, StatusClass: statusClass(e.Status),
			Duration: humanMS(e.DurationMS), When: humanTime(e.CreatedAt), WhenISO: e.CreatedAt.UTC().Format(time.RFC3339),
			Module: "—", ExitCode: "—",
		}
		switch {
		case e.ModuleName != nil:
			rv.Module = *e.ModuleName
		case e.ModuleID != nil:
			rv.Module = "deleted module"
		}
		if e.ExitCode != nil {
			rv.ExitCode = strconv.Itoa(int(*e.ExitCode))
		}
		v.Recent = append(v.Recent, rv)
	}
	v.Workers = <-workers
	if n, err := strconv.Atoi(v.Workers); err == nil && n > 0 {
		v.WorkersOK = true
	}
	h.render(w, r, http.StatusOK, "dashboard", s, "Dashboard", v)
	return nil
}

// countWorkers asks as /health does; a failure shows as "unknown" rather
// than failing the page.
func (h *Handler) countWorkers(ctx context.Context) string {
	if h.workers == nil {
		return "unknown"
	}
	ctx, cancel := context.WithTimeout(ctx, workersTimeout)
	defer cancel()
	n, err := h.workers(ctx)
	if err != nil {
		h.log.DebugContext(ctx, "count workers", "error", err)
		return "unknown"
	}
	return strconv.Itoa(n)
}

// statusClass colours an execution's status: the module ran and
// succeeded, ran and failed, or the platform could not run it.
func statusClass(status string) string {
	switch status {
	case "ok":
		return "ok"
	case "exit", "trap", "timeout", "memory_limit":
		return "bad"
	}
	return "warn"
}

// chart is a bar chart drawn as SVG on the server: geometry in attributes,
// colours in the stylesheet, so that the strict CSP holds. The SVG
// stretches to the page's width (preserveAspectRatio none: bars are only
// rectangles), while its labels are HTML, so that text keeps its size on a
// phone and on a wide screen alike.
type chart struct {
	Width, Height int
	Bars          []chartBar
	XLabels       []string
	Top           string
	Empty         bool
	Summary       string
}

type chartBar struct {
	X, W         string
	OkY, OkH     string
	FailY, FailH string
	Title        string
}

// Geometry of the chart, in SVG user units: a slot of chartSlot per bar.
const (
	chartSlot     = 10
	chartHeight   = 100
	chartHeadroom = 4
)

func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

func newChart(buckets []store.ExecutionBucket, until time.Time) chart {
	n := len(buckets)
	c := chart{Width: n * chartSlot, Height: chartHeight}
	var top, total, failed int64
	for _, b := range buckets {
		top = max(top, b.Total)
		total += b.Total
		failed += b.Failed
	}
	c.Empty = total == 0
	c.Summary = fmt.Sprintf("Executions per hour over the last 24 hours: %d in all, %d failed.", total, failed)
	c.Top = strconv.FormatInt(top, 10)
	if top == 0 {
		top = 1
	}
	scale := float64(chartHeight-chartHeadroom) / float64(top)
	for i, b := range buckets {
		okH := float64(b.Total-b.Failed) * scale
		failH := float64(b.Failed) * scale
		end := b.Start.Add(until.Sub(buckets[0].Start) / time.Duration(n))
		if i == n-1 {
			end = until
		}
		c.Bars = append(c.Bars, chartBar{
			X: f1(float64(i*chartSlot) + 1.5), W: f1(chartSlot - 3),
			OkY: f1(chartHeight - okH), OkH: f1(okH),
			FailY: f1(chartHeight - okH - failH), FailH: f1(failH),
			Title: fmt.Sprintf("%s–%s UTC: %d executions, %d failed",
				b.Start.UTC().Format("15:04"), end.UTC().Format("15:04"), b.Total, b.Failed),
		})
	}
	// Labels at every quarter: the HTML spreads them evenly.
	hours := int(until.Sub(buckets[0].Start).Round(time.Hour).Hours())
	for q := 4; q > 0; q-- {
		c.XLabels = append(c.XLabels, fmt.Sprintf("−%d h", hours*q/4))
	}
	c.XLabels = append(c.XLabels, "now")
	return c
}
