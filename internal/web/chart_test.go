package web

import (
	"strings"
	"testing"
	"time"

	"github.com/wasmwiz/wasmwiz/internal/store"
)

func TestNewChart(t *testing.T) {
	until := time.Date(2030, 1, 2, 15, 30, 0, 0, time.UTC)
	since := until.Add(-24 * time.Hour)
	buckets := make([]store.ExecutionBucket, 24)
	for i := range buckets {
		buckets[i].Start = since.Add(time.Duration(i) * time.Hour)
	}
	buckets[0] = store.ExecutionBucket{Start: since, Total: 4, Failed: 1}
	buckets[23].Total = 2

	tests := []struct {
		name    string
		buckets []store.ExecutionBucket
		top     string
		empty   bool
		bar0    chartBar
		bar23   chartBar
		summary string
	}{
		{
			name: "executions", buckets: buckets, top: "4",
			// The tallest bar reaches the headroom: 96 units, 24 per execution.
			bar0:    chartBar{X: "1.5", W: "7.0", OkY: "28.0", OkH: "72.0", FailY: "4.0", FailH: "24.0", Title: "15:30–16:30 UTC: 4 executions, 1 failed"},
			bar23:   chartBar{X: "231.5", W: "7.0", OkY: "52.0", OkH: "48.0", FailY: "52.0", FailH: "0.0", Title: "14:30–15:30 UTC: 2 executions, 0 failed"},
			summary: "6 in all, 1 failed",
		},
		{
			name: "none", buckets: make([]store.ExecutionBucket, 24), top: "0", empty: true,
			summary: "0 in all, 0 failed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.empty {
				for i := range tt.buckets {
					tt.buckets[i].Start = since.Add(time.Duration(i) * time.Hour)
				}
			}
			c := newChart(tt.buckets, until)
			if c.Width != 240 || c.Height != 100 || len(c.Bars) != 24 {
				t.Fatalf("chart %dx%d with %d bars; want 240x100 with 24", c.Width, c.Height, len(c.Bars))
			}
			if c.Top != tt.top || c.Empty != tt.empty {
				t.Errorf("Top, Empty = %q, %v; want %q, %v", c.Top, c.Empty, tt.top, tt.empty)
			}
			if !strings.Contains(c.Summary, tt.summary) {
				t.Errorf("Summary = %q; want it to say %q", c.Summary, tt.summary)
			}
			if want := []string{"−24 h", "−18 h", "−12 h", "−6 h", "now"}; strings.Join(c.XLabels, ",") != strings.Join(want, ",") {
				t.Errorf("XLabels = %q; want %q", c.XLabels, want)
			}
			if tt.empty {
				return
			}
			if c.Bars[0] != tt.bar0 {
				t.Errorf("Bars[0] = %+v; want %+v", c.Bars[0], tt.bar0)
			}
			if c.Bars[23] != tt.bar23 {
				t.Errorf("Bars[23] = %+v; want %+v", c.Bars[23], tt.bar23)
			}
		})
	}
}

func TestLocalPath(t *testing.T) {
	tests := []struct{ next, want string }{
		{"/upload?module=x", "/upload?module=x"},
		{"/api-keys", "/api-keys"},
		{"", "/"},
		{"https://evil.example/", "/"},
		{"//evil.example/x", "/"},
		{"/\\evil.example", "/"},
		{"javascript:alert(1)", "/"},
		{"/ok\r\nSet-Cookie: x=y", "/"},
	}
	for _, tt := range tests {
		if got := localPath(tt.next); got != tt.want {
			t.Errorf("localPath(%q) = %q; want %q", tt.next, got, tt.want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1 KiB"}, {1536, "1.5 KiB"}, {10 << 20, "10 MiB"}, {3 << 30, "3 GiB"}}
	for _, tt := range tests {
		if got := humanBytes(tt.n); got != tt.want {
			t.Errorf("humanBytes(%d) = %q; want %q", tt.n, got, tt.want)
		}
	}
}
