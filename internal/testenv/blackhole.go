package testenv

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"

	"github.com/wasmwiz/wasmwiz/internal/store"
)

// PartitionedStore opens a store on a fresh database through a
// BlackHoleProxy, for tests of a hung way to PostgreSQL.
func PartitionedStore(t *testing.T) (*store.Store, *BlackHoleProxy) {
	t.Helper()
	u, err := url.Parse(Database(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := StartBlackHoleProxy(t, u.Host)
	u.Host = proxy.Addr()
	s, err := store.Open(context.Background(), u.String())
	if err != nil {
		t.Fatalf("open store through the proxy: %v", err)
	}
	t.Cleanup(s.Close)
	// Cleanups run last first: the proxy's sockets close before the pool,
	// which then need not wait on a silent server to say goodbye.
	t.Cleanup(proxy.Close)
	return s, proxy
}

// BlackHoleProxy forwards TCP connections to PostgreSQL until partitioned:
// then, as a network partition does, it forwards nothing either way while
// keeping every connection open, and accepts new ones without answering.
type BlackHoleProxy struct {
	ln       net.Listener
	upstream string
	cut      chan struct{} // closed on partition
	once     sync.Once

	mu    sync.Mutex
	conns []net.Conn
}

func StartBlackHoleProxy(t *testing.T, upstream string) *BlackHoleProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &BlackHoleProxy{ln: ln, upstream: upstream, cut: make(chan struct{})}
	t.Cleanup(p.Close)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.hold(c)
			select {
			case <-p.cut:
				continue // accepted, never answered
			default:
			}
			go p.forward(c)
		}
	}()
	return p
}

// Addr is the proxy's address, to put in place of the upstream's.
func (p *BlackHoleProxy) Addr() string { return p.ln.Addr().String() }

// Partition cuts the way: from now on nothing passes either way.
func (p *BlackHoleProxy) Partition() { p.once.Do(func() { close(p.cut) }) }

func (p *BlackHoleProxy) hold(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *BlackHoleProxy) forward(client net.Conn) {
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		client.Close()
		return
	}
	p.hold(up)
	go p.pipe(up, client)
	p.pipe(client, up)
}

// pipe copies src to dst until the partition, after which what arrives is
// dropped and nothing more is read.
func (p *BlackHoleProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.cut:
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
			}
			return
		}
	}
}

// Close ends the proxy and every connection it holds.
func (p *BlackHoleProxy) Close() {
	p.Partition()
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// SilentListener accepts TCP connections and never answers them; it
// returns its address.
func SilentListener(t *testing.T) string {
	t.Helper()
	p := StartBlackHoleProxy(t, "")
	p.Partition() // before anyone can connect: nothing is ever forwarded
	return p.Addr()
}
