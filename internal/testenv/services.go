package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wasmwiz/wasmwiz/internal/store"
)

// Fault tests stop, kill and restart services. The machine's services are
// shared with every other test running at the same time, so those tests get
// private instances instead: StartNATS and StartPostgres run a server of
// the test's own on a free loopback port and remove it when the test ends.

// natsServerBin is where Debian's nats-server package installs the server.
const natsServerBin = "/usr/sbin/nats-server"

// serviceStopTimeout bounds a graceful stop before the process is killed.
const serviceStopTimeout = 20 * time.Second

// daemon is one run of a service's process, its output kept for failures.
type daemon struct {
	name string
	cmd  *exec.Cmd
	out  *SyncBuffer
	done chan struct{}
}

// SyncBuffer collects output that many goroutines or a child process write
// at once (a logger's lines, a server's stderr), for a test to read.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startDaemon(name string, cmd *exec.Cmd, out *SyncBuffer) (*daemon, error) {
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// signal sends sig and waits up to timeout for the process to exit,
// killing it when it does not; it reports whether the exit was graceful.
func (d *daemon) signal(sig syscall.Signal, timeout time.Duration) bool {
	if d.exited() {
		return true
	}
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
		return true
	case <-time.After(timeout):
		_ = d.cmd.Process.Kill()
		<-d.done
		return false
	}
}

// FreePort returns a port nobody listens on, for a server a test is about
// to start. It is drawn at random from 20000-32767, below Linux's
// ephemeral range (32768-60999), so that neither the kernel's picks for
// other tests' ":0" listeners nor the source ports of outgoing connections
// land on it between now and the server's bind; and it is never handed out
// twice in one test binary, because the kernel may well give a port just
// released to the next ":0" (CI saw a worker's metrics port handed out
// again to the api it ran beside). Another test binary may still take it
// first; the server then fails to start and says so.
func FreePort(t testing.TB) int {
	t.Helper()
	const lo, n = 20000, 12768
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 200 {
		p := lo + rand.IntN(n)
		if portsGiven[p] {
			continue
		}
		// Every address: a server bound to one (127.0.0.1) and another to
		// all (a worker's metrics) would conflict.
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ln.Close()
		portsGiven[p] = true
		return p
	}
	t.Fatalf("find a free port: none free in 200 tries in %d-%d", lo, lo+n-1)
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// waitTCP waits until addr accepts connections, the process exits or
// timeout passes.
func waitTCP(d *daemon, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if d.exited() {
			return fmt.Errorf("%s exited before listening on %s", d.name, addr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening on %s after %v: %w", d.name, addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// NATSServer is a nats-server with JetStream of one test's own.
type NATSServer struct {
	t        testing.TB
	port     int
	storeDir string

	mu  sync.Mutex
	cur *daemon
	out *SyncBuffer // every run's output, in order
}

// StartNATS starts a private nats-server (stock settings, JetStream on, a
// store directory of its own) on a free loopback port. It is killed and its
// store removed when the test ends.
func StartNATS(t testing.TB) *NATSServer {
	t.Helper()
	if _, err := os.Stat(natsServerBin); err != nil {
		t.Fatalf("fault tests need %s of their own: %v; install it with: apt-get install nats-server", natsServerBin, err)
	}
	dir, err := os.MkdirTemp("", "wasmwiz-nats-")
	if err != nil {
		t.Fatalf("NATS store directory: %v", err)
	}
	s := &NATSServer{t: t, port: FreePort(t), storeDir: dir, out: &SyncBuffer{}}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("--- private nats-server output (last lines):\n%s", lastLines(s.out.String(), 30))
		}
		os.RemoveAll(dir)
	})
	s.Start()
	return s
}

// URL is the server's client URL; it stays the same across restarts.
func (s *NATSServer) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// Start starts the server again after Stop or Kill, on the same port and
// store directory, and waits until it accepts clients.
func (s *NATSServer) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && !s.cur.exited() {
		s.t.Fatalf("private nats-server on port %d is already running", s.port)
	}
	cmd := exec.Command(natsServerBin, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-js", "-sd", s.storeDir)
	d, err := startDaemon("nats-server", cmd, s.out)
	if err != nil {
		s.t.Fatalf("private NATS: %v", err)
	}
	s.cur = d
	if err := waitTCP(d, fmt.Sprintf("127.0.0.1:%d", s.port), 15*time.Second); err != nil {
		s.t.Fatalf("private NATS: %v\n%s", err, lastLines(s.out.String(), 20))
	}
}

// Stop shuts the server down gracefully (SIGTERM) and waits for it to exit.
func (s *NATSServer) Stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && !s.cur.signal(syscall.SIGTERM, serviceStopTimeout) {
		s.t.Errorf("private nats-server did not stop within %v of SIGTERM; killed", serviceStopTimeout)
	}
}

// Kill ends the server at once (SIGKILL), as a crash would.
func (s *NATSServer) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil {
		s.cur.signal(syscall.SIGKILL, serviceStopTimeout)
	}
}

// Restart stops the server gracefully, keeps it down for down, and starts
// it again on the same port and store directory.
func (s *NATSServer) Restart(down time.Duration) {
	s.t.Helper()
	s.Stop()
	time.Sleep(down)
	s.Start()
}

// PostgresServer is a PostgreSQL cluster of one test's own.
type PostgresServer struct {
	t    testing.TB
	bin  string
	dir  string // owned by the server's user: data/, the socket, the log
	port int
	cred *syscall.Credential // nil unless we are root

	mu  sync.Mutex
	cur *daemon
	out *SyncBuffer
}

// postgresBinDir finds the newest installed PostgreSQL's binaries.
func postgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return versionOf(b) - versionOf(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no /usr/lib/postgresql/*/bin/initdb")
}

func versionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// StartPostgres initialises a throw-away cluster (trust authentication,
// fsync off) in a temporary directory and starts it on a free loopback
// port. PostgreSQL refuses to run as root, so as root the cluster belongs
// to, and runs as, the user postgres. It is stopped and removed when the
// test ends.
func StartPostgres(t testing.TB) *PostgresServer {
	t.Helper()
	bin, err := postgresBinDir()
	if err != nil {
		t.Fatalf("fault tests need a PostgreSQL server of their own: %v; install it with: apt-get install postgresql", err)
	}
	dir, err := os.MkdirTemp("", "wasmwiz-pg-")
	if err != nil {
		t.Fatalf("PostgreSQL directory: %v", err)
	}
	s := &PostgresServer{t: t, bin: bin, dir: dir, port: FreePort(t), out: &SyncBuffer{}}
	t.Cleanup(func() {
		s.mu.Lock()
		if s.cur != nil {
			// Immediate shutdown: the postmaster takes its backends with it,
			// which a SIGKILL of the postmaster alone would leave behind.
			s.cur.signal(syscall.SIGQUIT, serviceStopTimeout)
		}
		s.mu.Unlock()
		if t.Failed() {
			t.Logf("--- private PostgreSQL output (last lines):\n%s", lastLines(s.out.String(), 30))
		}
		os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("PostgreSQL will not run as root and there is no user postgres to run it as (%v); the postgresql package creates it", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, int(uid), int(gid)); err != nil {
			t.Fatalf("give %s to postgres: %v", dir, err)
		}
	}

	// --no-sync: a cluster that lives for one test need not survive a
	// power cut, and syncing costs most of initdb's time.
	initdb := s.command("initdb", "-D", s.dataDir(), "-A", "trust", "-U", "postgres",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, lastLines(string(out), 20))
	}
	s.Start()
	return s
}

func (s *PostgresServer) dataDir() string { return filepath.Join(s.dir, "data") }

// command runs one of PostgreSQL's programs as the cluster's owner. A
// credential on the process rather than runuser: signals then reach the
// server itself, not a wrapper that forwards them its own way.
func (s *PostgresServer) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LANG=C", "HOME=" + s.dir}
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

// URL is the address of database db on this server.
func (s *PostgresServer) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// Start starts the server after Stop (or the first time) on the same port
// and data, and waits until it accepts queries.
func (s *PostgresServer) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && !s.cur.exited() {
		s.t.Fatalf("private PostgreSQL on port %d is already running", s.port)
	}
	cmd := s.command("postgres", "-D", s.dataDir(), "-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+s.dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "shared_buffers=16MB", "-c", "max_connections=60")
	d, err := startDaemon("postgres", cmd, s.out)
	if err != nil {
		s.t.Fatalf("private PostgreSQL: %v", err)
	}
	s.cur = d
	if err := s.waitQueries(d, 30*time.Second); err != nil {
		s.t.Fatalf("private PostgreSQL: %v\n%s", err, lastLines(s.out.String(), 20))
	}
}

// waitQueries waits until the server answers a query: it listens before
// recovery ends, and answers "starting up" until then.
func (s *PostgresServer) waitQueries(d *daemon, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, s.URL("postgres"))
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		if d.exited() {
			return fmt.Errorf("postgres exited while starting")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not answering on port %d after %v: %w", s.port, timeout, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Stop shuts the server down the way an operator's `pg_ctl stop` does (a
// fast shutdown: sessions are ended, transactions rolled back) and waits
// for it to exit.
func (s *PostgresServer) Stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && !s.cur.signal(syscall.SIGINT, serviceStopTimeout) {
		s.t.Errorf("private PostgreSQL did not stop within %v of a fast shutdown; killed", serviceStopTimeout)
	}
}

// Database creates a database with a unique name on this server, applies
// the migrations and returns its URL. The server's removal drops it.
func (s *PostgresServer) Database(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatalf("connect to the private PostgreSQL: %v", err)
	}
	defer admin.Close(ctx)
	name := "wwz_fault_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:16]
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database on the private PostgreSQL: %v", err)
	}
	dbURL := s.URL(name)
	if _, err := store.Migrate(ctx, dbURL); err != nil {
		t.Fatalf("migrate the private PostgreSQL's database: %v", err)
	}
	return dbURL
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
