package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestLoggerAddsRequestID(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, slog.LevelInfo, "api").With("component", "test")
	log.InfoContext(WithRequestID(context.Background(), "req-1"), "hello")
	log.DebugContext(context.Background(), "hidden")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d lines; want 1 (debug filtered): %q", len(lines), buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["request_id"] != "req-1" || rec["program"] != "api" || rec["component"] != "test" {
		t.Errorf("log line = %v; want request_id, program and component", rec)
	}
}

func TestValidRequestID(t *testing.T) {
	tests := map[string]bool{
		"abc-123_X.y": true, strings.Repeat("a", 128): true,
		"": false, strings.Repeat("a", 129): false, "a b": false, "a\nb": false, "ünï": false, "a/b": false,
	}
	for id, want := range tests {
		if got := ValidRequestID(id); got != want {
			t.Errorf("ValidRequestID(%q) = %v; want %v", id, got, want)
		}
	}
}
