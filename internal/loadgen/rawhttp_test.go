package loadgen

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantStatus int
		wantKeep   bool
		wantBody   string
		wantErr    string
	}{
		{name: "content length", in: "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}",
			wantStatus: 200, wantKeep: true, wantBody: `{"status":"ok"}`},
		{name: "header names any case", in: "HTTP/1.1 429 Too Many Requests\r\ncontent-LENGTH:  2 \r\n\r\n{}",
			wantStatus: 429, wantKeep: true, wantBody: "{}"},
		{name: "chunked with extension and trailer", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"4;x=y\r\nabcd\r\n2\r\nef\r\n0\r\nX-Trailer: 1\r\n\r\n",
			wantStatus: 200, wantKeep: true, wantBody: "abcdef"},
		{name: "connection close", in: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
			wantStatus: 200, wantKeep: false, wantBody: "x"},
		{name: "HTTP/1.0 to the end", in: "HTTP/1.0 200 OK\r\n\r\nuntil EOF",
			wantStatus: 200, wantKeep: false, wantBody: "until EOF"},
		{name: "interim answer first", in: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
			wantStatus: 201, wantKeep: true},
		{name: "no content", in: "HTTP/1.1 204 No Content\r\n\r\n", wantStatus: 204, wantKeep: true},
		{name: "truncated body", in: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
			wantStatus: 200, wantErr: "unexpected EOF"},
		{name: "truncated chunk", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nabc",
			wantStatus: 200, wantErr: "unexpected EOF"},
		{name: "closed before answering", in: "", wantErr: "EOF"},
		{name: "not HTTP", in: "SSH-2.0-OpenSSH\r\n", wantErr: "malformed status line"},
		{name: "bad length", in: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", wantStatus: 200, wantErr: "malformed Content-Length"},
		{name: "bad chunk size", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", wantStatus: 200, wantErr: "malformed chunk size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, keep, body, err := readResponse(bufio.NewReader(strings.NewReader(tt.in)), nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("readResponse = %d, %v; want error containing %q", status, err, tt.wantErr)
				}
				if status != tt.wantStatus {
					t.Errorf("readResponse status = %d; want %d", status, tt.wantStatus)
				}
				return
			}
			if err != nil || status != tt.wantStatus || keep != tt.wantKeep || string(body) != tt.wantBody {
				t.Errorf("readResponse = %d keep %v %q, %v; want %d keep %v %q", status, keep, body, err, tt.wantStatus, tt.wantKeep, tt.wantBody)
			}
		})
	}
}

func TestReadResponseBigBody(t *testing.T) {
	// The first maxBody bytes are kept, the rest skipped, and the next
	// answer on the connection is read intact.
	const n = maxBody + 12345
	in := "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(n) + "\r\n\r\n" + strings.Repeat("a", n) +
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	br := bufio.NewReader(strings.NewReader(in))
	_, keep, body, err := readResponse(br, nil)
	if err != nil || !keep || len(body) != maxBody {
		t.Fatalf("readResponse(big) = keep %v, %d bytes, %v; want keep, %d bytes", keep, len(body), err, maxBody)
	}
	_, _, body, err = readResponse(br, body[:0])
	if err != nil || string(body) != "ok" {
		t.Errorf("readResponse(after big) = %q, %v; want ok", body, err)
	}
}

func TestRenderRequest(t *testing.T) {
	h := http.Header{}
	h.Set("Authorization", "Bearer k")
	h.Set("Content-Type", "application/json")
	addr, raw, err := renderRequest(Request{Method: http.MethodPost, URL: "http://127.0.0.1:8080/api/wasm/execute?x=1", Header: h, Body: []byte(`{"a":1}`)})
	want := "POST /api/wasm/execute?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wasmwiz-loadgen\r\n" +
		"Authorization: Bearer k\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
	if err != nil || addr != "127.0.0.1:8080" || string(raw) != want {
		t.Errorf("renderRequest = %q, %q, %v; want 127.0.0.1:8080, %q", addr, raw, err, want)
	}
	addr, _, err = renderRequest(Request{Method: http.MethodGet, URL: "http://localhost/health/live"})
	if err != nil || addr != "localhost:80" {
		t.Errorf("renderRequest(no port) addr = %q, %v; want localhost:80", addr, err)
	}
	if _, _, err := renderRequest(Request{Method: http.MethodGet, URL: "https://example.com/"}); err == nil {
		t.Errorf("renderRequest(https) error = nil; want one (the lean client speaks http only)")
	}
}

// connServer counts the connections a server accepts.
func connServer(t *testing.T, idle time.Duration, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.IdleTimeout = idle
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

// TestLeanClient runs the lean client against Go's own server.
func TestLeanClient(t *testing.T) {
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		idle      time.Duration
		rate      float64
		wantConns int64
		notJSON   bool // the body is no JSON document: no execution status
	}{
		{name: "keep-alive", handler: func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, `{"status":"ok"}`)
		}, wantConns: 1},
		{name: "chunked", handler: func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, `{"stat`)
			w.(http.Flusher).Flush()
			io.WriteString(w, `us":"ok"}`)
		}, wantConns: 1},
		{name: "body over the limit", handler: func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, strings.Repeat("x", maxBody+1000))
		}, wantConns: 1, notJSON: true},
		{name: "server closes", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Connection", "close")
			io.WriteString(w, `{"status":"ok"}`)
		}, wantConns: 5},
		// Sends 100 ms apart, the server closes idle connections after
		// 10 ms: each send finds its connection closed, and tries again.
		{name: "stale connection", idle: 10 * time.Millisecond, rate: 10, handler: func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, `{"status":"ok"}`)
		}, wantConns: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, conns := connServer(t, tt.idle, tt.handler)
			res := run(t, Config{Request: get(srv.URL), Concurrency: 1, Rate: tt.rate, Requests: 5})
			wantOK := int64(5)
			if tt.notJSON {
				wantOK = 0
			}
			if res.Succeeded != 5 || res.ByExecStatus["ok"] != wantOK {
				t.Errorf("Run succeeded %d, exec status %v, transport %v (%s); want 5 succeeded, %d ok", res.Succeeded, res.ByExecStatus, res.TransportErrors, res.FirstError, wantOK)
			}
			if got := conns.Load(); got != tt.wantConns {
				t.Errorf("server accepted %d connections; want %d", got, tt.wantConns)
			}
		})
	}
}

func TestErrorKind(t *testing.T) {
	if got := errorKind(errors.Join(errStale, io.EOF)); got != "eof" {
		t.Errorf("errorKind(stale EOF) = %q; want eof", got)
	}
}
