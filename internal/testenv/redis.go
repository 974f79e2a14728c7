package testenv

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RedisServer is a redis-server of one test's own, for tests that stop
// Redis: the machine's is shared with every other test running at once.
type RedisServer struct {
	t    testing.TB
	bin  string
	dir  string
	port int

	mu  sync.Mutex
	cur *daemon
	out *SyncBuffer // every run's output, in order
}

// StartRedis starts a private redis-server on a free loopback port, with
// persistence off (nothing to load on a restart, nothing written on a
// stop): a restart comes back empty, as a cache-only deployment's would.
// It is killed when the test ends.
func StartRedis(t testing.TB) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("fault tests need a redis-server of their own: %v; install it with: apt-get install redis-server", err)
	}
	// Its working directory: with persistence off nothing should be
	// written there, but a stray dump must not land in the package.
	dir, err := os.MkdirTemp("", "wasmwiz-redis-")
	if err != nil {
		t.Fatalf("Redis directory: %v", err)
	}
	s := &RedisServer{t: t, bin: bin, dir: dir, port: FreePort(t), out: &SyncBuffer{}}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("--- private redis-server output (last lines):\n%s", lastLines(s.out.String(), 30))
		}
		os.RemoveAll(dir)
	})
	s.Start()
	return s
}

// URL is the server's address for REDIS_URL; it stays the same across
// restarts.
func (s *RedisServer) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", s.port) }

// Port is the server's loopback port.
func (s *RedisServer) Port() int { return s.port }

// Start starts the server after Stop or Kill (or the first time) on the
// same port, and waits until it answers PING.
func (s *RedisServer) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && !s.cur.exited() {
		s.t.Fatalf("private redis-server on port %d is already running", s.port)
	}
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", s.dir)
	cmd.Dir = s.dir
	d, err := startDaemon("redis-server", cmd, s.out)
	if err != nil {
		s.t.Fatalf("private Redis: %v", err)
	}
	s.cur = d
	if err := waitPING(d, fmt.Sprintf("127.0.0.1:%d", s.port), 15*time.Second); err != nil {
		s.t.Fatalf("private Redis: %v\n%s", err, lastLines(s.out.String(), 20))
	}
}

// Stop shuts the server down gracefully (SIGTERM) and waits for it to exit.
func (s *RedisServer) Stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && !s.cur.signal(syscall.SIGTERM, serviceStopTimeout) {
		s.t.Errorf("private redis-server did not stop within %v of SIGTERM; killed", serviceStopTimeout)
	}
}

// Kill ends the server at once (SIGKILL), as a crash would.
func (s *RedisServer) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil {
		s.cur.signal(syscall.SIGKILL, serviceStopTimeout)
	}
}

// Restart stops the server gracefully, keeps it down for down, and starts
// it again on the same port.
func (s *RedisServer) Restart(down time.Duration) {
	s.t.Helper()
	s.Stop()
	time.Sleep(down)
	s.Start()
}

// waitPING waits until the server at addr answers PING: it accepts
// connections a moment before it serves commands.
func waitPING(d *daemon, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ping(addr)
		if err == nil {
			return nil
		}
		if d.exited() {
			return fmt.Errorf("%s exited before answering on %s", d.name, addr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not answering PING on %s after %v: %w", d.name, addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}
