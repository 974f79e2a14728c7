package telemetry

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer records what reaches the destination and how it arrived.
type syncBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	gate   chan struct{} // when set, each Write waits for a value
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	if b.gate != nil {
		<-b.gate
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes++
	return b.buf.Write(p)
}

func (b *syncBuffer) snapshot() (string, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String(), b.writes
}

func TestLogWriterKeepsEveryLineWholeAndInOrder(t *testing.T) {
	dst := &syncBuffer{}
	lw := NewLogWriter(dst)
	const writers, lines = 8, 2000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				fmt.Fprintf(lw, "w%d %06d %s\n", w, i, strings.Repeat("x", i%300))
			}
		}()
	}
	wg.Wait()
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	out, writes := dst.snapshot()
	got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("got %d lines; want %d", len(got), writers*lines)
	}
	next := make([]int, writers)
	for _, line := range got {
		f := strings.Fields(line)
		var w, i int
		if len(f) < 2 || len(f) > 3 {
			t.Fatalf("line %q was split or mixed", line)
		}
		if _, err := fmt.Sscanf(f[0]+" "+f[1], "w%d %d", &w, &i); err != nil || w < 0 || w >= writers {
			t.Fatalf("line %q does not parse: %v", line, err)
		}
		if i != next[w] {
			t.Fatalf("writer %d: line %d after %d; lines reordered or lost", w, i, next[w]-1)
		}
		if pad := strings.Repeat("x", i%300); len(f) == 3 && f[2] != pad || len(f) == 2 && pad != "" {
			t.Fatalf("line %q was split or mixed", line)
		}
		next[w]++
	}
	if writes >= writers*lines {
		t.Errorf("%d writes for %d lines: concurrent lines were not batched", writes, writers*lines)
	}
}

func TestLogWriterIdleLineGoesOutAtOnce(t *testing.T) {
	dst := &syncBuffer{}
	lw := NewLogWriter(dst)
	defer lw.Close()
	fmt.Fprintln(lw, "one")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if out, _ := dst.snapshot(); out == "one\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a line written to an idle writer did not reach the destination without Close")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLogWriterStalledDestinationBoundsMemory(t *testing.T) {
	dst := &syncBuffer{gate: make(chan struct{})}
	lw := NewLogWriter(dst)
	line := []byte(strings.Repeat("y", 1023) + "\n")
	// The first line's write stalls in the destination; the next fill
	// pending to its bound, and then Write must wait.
	wrote := make(chan int)
	go func() {
		n := 0
		for range 3 * maxPending / len(line) {
			_, _ = lw.Write(line)
			n++
		}
		wrote <- n
	}()
	time.Sleep(50 * time.Millisecond)
	lw.mu.Lock()
	pending := len(lw.pending)
	lw.mu.Unlock()
	if pending > maxPending {
		t.Fatalf("pending %d bytes; want at most %d", pending, maxPending)
	}
	select {
	case n := <-wrote:
		t.Fatalf("all %d writes returned while the destination was stalled", n)
	default:
	}
	close(dst.gate) // the destination recovers
	if n := <-wrote; n != 3*maxPending/len(line) {
		t.Fatalf("wrote %d lines", n)
	}
	_ = lw.Close()
	out, _ := dst.snapshot()
	if len(out) != 3*maxPending/len(line)*len(line) {
		t.Fatalf("destination has %d bytes; want every line", len(out))
	}
}

func TestLogWriterAfterCloseWritesDirectly(t *testing.T) {
	dst := &syncBuffer{}
	lw := NewLogWriter(dst)
	fmt.Fprintln(lw, "before")
	_ = lw.Close()
	_ = lw.Close()
	fmt.Fprintln(lw, "after")
	if out, _ := dst.snapshot(); out != "before\nafter\n" {
		t.Fatalf("destination = %q", out)
	}
}

func TestLogWriterUnderSlog(t *testing.T) {
	dst := &syncBuffer{}
	lw := NewLogWriter(dst)
	log := NewLogger(lw, slog.LevelInfo, "api")
	log.Info("hello", "n", 1)
	_ = lw.Close()
	if out, _ := dst.snapshot(); !strings.Contains(out, `"msg":"hello"`) || !strings.HasSuffix(out, "\n") {
		t.Fatalf("destination = %q", out)
	}
}

// BenchmarkLogWriter writes access-log-sized lines from parallel goroutines
// to a file, directly and through a LogWriter.
func BenchmarkLogWriter(b *testing.B) {
	line := []byte(`{"time":"2026-11-23T17:47:16.123Z","level":"INFO","msg":"request","method":"POST","route":"/api/wasm/execute","status":200}` + "\n")
	for _, mode := range []string{"direct", "logwriter"} {
		b.Run(mode, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "log"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			var w io.Writer = f
			if mode == "logwriter" {
				lw := NewLogWriter(f)
				defer lw.Close()
				w = lw
			}
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_, _ = w.Write(line)
				}
			})
		})
	}
}
