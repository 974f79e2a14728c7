package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/health/live":
			io.WriteString(w, `{"status":"ok"}`)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]

	tests := []struct {
		name string
		args []string
		env  map[string]string
		want int
	}{
		{"live", []string{srv.URL + "/health/live"}, nil, 0},
		{"unready", []string{srv.URL + "/health/ready"}, nil, 1},
		{"port from env", []string{"http://127.0.0.1:${SERVER_PORT:-1}/health/live"}, map[string]string{"SERVER_PORT": port}, 0},
		{"default port", []string{"http://127.0.0.1:${SERVER_PORT:-" + port + "}/health/live"}, nil, 0},
		{"two urls", []string{"http://127.0.0.1:1/health/live", "extra"}, nil, 2},
		{"refused", []string{"-timeout=1s", "http://127.0.0.1:1/health/live"}, nil, 1},
		{"no url", nil, nil, 2},
		{"not http", []string{"ftp://x/"}, nil, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr strings.Builder
			getenv := func(k string) string { return tt.env[k] }
			if got := run(tt.args, getenv, &stderr); got != tt.want {
				t.Errorf("run(%q) = %d; want %d (stderr: %s)", tt.args, got, tt.want, stderr.String())
			}
		})
	}
}
