package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// The lean client speaks just enough HTTP/1.1 for a load test: one
// keep-alive connection per caller, the request rendered once, the answer
// parsed in the caller's goroutine. net/http's client costs 30-60 µs of CPU
// per request (two goroutines per connection, a header map per answer);
// this one costs a fraction of that, and on a machine that also runs the
// platform, the generator's CPU is taken from what it measures.

// errStale is a kept-alive connection the server closed while it was idle.
var errStale = errors.New("connection closed by the server before answering")

// rawSender is one caller's connection.
type rawSender struct {
	addr    string
	req     []byte // the whole request, headers and body
	timeout time.Duration
	conn    net.Conn
	br      *bufio.Reader
	stop    func() bool // unregisters the cancellation of conn
	used    bool        // conn has answered before: an error at once means stale
}

// renderRequest renders r once for every send. It fails for anything but
// plain http, which is all the lean client speaks.
func renderRequest(r Request) (addr string, raw []byte, err error) {
	u, err := url.Parse(r.URL)
	if err != nil {
		return "", nil, fmt.Errorf("parse %q: %w", r.URL, err)
	}
	if u.Scheme != "http" {
		return "", nil, fmt.Errorf("%q: the lean client speaks plain http only", r.URL)
	}
	addr = u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: wasmwiz-loadgen\r\n", r.Method, u.RequestURI(), u.Host)
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range r.Header {
			if !yield(k) {
				return
			}
		}
	}) {
		for _, v := range r.Header[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	if r.Body != nil || r.Method == http.MethodPost || r.Method == http.MethodPut {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(r.Body))
	}
	b.WriteString("\r\n")
	b.Write(r.Body)
	return addr, b.Bytes(), nil
}

func (s *rawSender) close() {
	if s.conn != nil {
		s.stop()
		s.conn.Close()
		s.conn, s.br, s.used = nil, nil, false
	}
}

func (s *rawSender) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: min(s.timeout, 5*time.Second), KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return err
	}
	s.conn = conn
	if s.br == nil {
		s.br = bufio.NewReaderSize(conn, 16<<10)
	} else {
		s.br.Reset(conn)
	}
	// Cancelling the run interrupts a request in flight at once.
	s.stop = context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	return nil
}

func (s *rawSender) send(ctx context.Context, buf []byte) (outcome, []byte) {
	o, buf := s.try(ctx, buf)
	if errors.Is(o.err, errStale) && ctx.Err() == nil {
		// What net/http does for a reused connection the server closed
		// while idle: try once more on a new one.
		o, buf = s.try(ctx, buf)
	}
	if o.err != nil && ctx.Err() != nil {
		o.err = fmt.Errorf("%w: %w", ctx.Err(), o.err)
	}
	return o, buf
}

func (s *rawSender) try(ctx context.Context, buf []byte) (outcome, []byte) {
	if s.conn == nil {
		if err := s.dial(ctx); err != nil {
			return outcome{err: err}, buf
		}
	}
	reused := s.used
	if err := s.conn.SetDeadline(time.Now().Add(s.timeout)); err != nil {
		s.close()
		return outcome{err: err}, buf
	}
	if err := ctx.Err(); err != nil { // cancelled before the deadline was set
		return outcome{err: err}, buf
	}
	if _, err := s.conn.Write(s.req); err != nil {
		s.close()
		if reused {
			err = fmt.Errorf("%w: %w", errStale, err)
		}
		return outcome{err: err}, buf
	}
	status, keep, buf, err := readResponse(s.br, buf[:0])
	if err != nil {
		s.close()
		if reused && status == 0 && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)) {
			err = fmt.Errorf("%w: %w", errStale, err)
		}
		return outcome{status: status, err: err}, buf
	}
	s.used = true
	if !keep {
		s.close()
	}
	return outcome{status: status, body: buf}, buf
}

func isReset(err error) bool { return errorKind(err) == "connection_reset" }

// readResponse reads one HTTP/1.1 answer: its status, whether the
// connection may be kept, and up to maxBody bytes of its body into buf.
// status is 0 until the status line has been read.
func readResponse(br *bufio.Reader, buf []byte) (status int, keep bool, _ []byte, err error) {
	for {
		line, err := readLine(br)
		if err != nil {
			return 0, false, buf, err
		}
		// "HTTP/1.1 200 OK"
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
			return 0, false, buf, fmt.Errorf("malformed status line %q", line)
		}
		status, err = strconv.Atoi(string(line[9:12]))
		if err != nil {
			return 0, false, buf, fmt.Errorf("malformed status line %q", line)
		}
		keep = line[7] == '1'
		length, chunked := int64(-1), false
		for {
			h, err := readLine(br)
			if err != nil {
				return status, false, buf, err
			}
			if len(h) == 0 {
				break
			}
			name, value, ok := bytes.Cut(h, []byte(":"))
			if !ok {
				return status, false, buf, fmt.Errorf("malformed header %q", h)
			}
			value = bytes.TrimSpace(value)
			switch {
			case asciiEqualFold(name, "Content-Length"):
				if length, err = strconv.ParseInt(string(value), 10, 64); err != nil || length < 0 {
					return status, false, buf, fmt.Errorf("malformed Content-Length %q", value)
				}
			case asciiEqualFold(name, "Transfer-Encoding"):
				chunked = asciiEqualFold(value, "chunked")
			case asciiEqualFold(name, "Connection"):
				if asciiEqualFold(value, "close") {
					keep = false
				} else if asciiEqualFold(value, "keep-alive") {
					keep = true
				}
			}
		}
		if status >= 100 && status < 200 {
			continue // an interim answer; the real one follows
		}
		switch {
		case status == http.StatusNoContent || status == http.StatusNotModified:
		case chunked:
			buf, err = readChunked(br, buf)
		case length >= 0:
			buf, err = readN(br, buf, length)
		default: // the body runs to the end of the connection
			buf, err = readBody(br, buf)
			keep = false
		}
		return status, keep && err == nil, buf, err
	}
}

// readLine returns one line without its CRLF; the slice is valid until the
// next read.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errors.New("header line too long")
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

// readN reads n body bytes, keeping the first maxBody of them.
func readN(br *bufio.Reader, buf []byte, n int64) ([]byte, error) {
	keep := min(n, int64(maxBody-len(buf)))
	if keep > 0 {
		start := len(buf)
		buf = slices.Grow(buf, int(keep))[:start+int(keep)]
		if _, err := io.ReadFull(br, buf[start:]); err != nil {
			return buf[:start], unexpected(err)
		}
	}
	if rest := n - max(keep, 0); rest > 0 {
		if _, err := br.Discard(int(rest)); err != nil {
			return buf, unexpected(err)
		}
	}
	return buf, nil
}

func readChunked(br *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		line, err := readLine(br)
		if err != nil {
			return buf, unexpected(err)
		}
		size, _, _ := bytes.Cut(line, []byte(";"))
		n, err := strconv.ParseInt(string(bytes.TrimSpace(size)), 16, 64)
		if err != nil || n < 0 {
			return buf, fmt.Errorf("malformed chunk size %q", line)
		}
		if n == 0 {
			for { // trailers, up to the blank line
				t, err := readLine(br)
				if err != nil {
					return buf, unexpected(err)
				}
				if len(t) == 0 {
					return buf, nil
				}
			}
		}
		if buf, err = readN(br, buf, n); err != nil {
			return buf, err
		}
		if crlf, err := readLine(br); err != nil || len(crlf) != 0 {
			return buf, errors.New("malformed chunk end")
		}
	}
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}
