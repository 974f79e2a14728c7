package telemetry

import (
	"io"
	"sync"
)

// maxPending bounds the bytes a LogWriter holds for its goroutine. Past it,
// Write waits for the write in progress, as a direct write would: a stalled
// stderr (a full pipe, a slow log collector) slows the program rather than
// grow its memory or lose lines.
const maxPending = 1 << 20

// LogWriter hands log lines to a goroutine of its own that writes them, so
// that a request never waits on a write(2) to stderr: the api's access line
// is logged before the response leaves. Lines that arrive while a write is
// in progress go out together in the next one, which under load turns a
// system call per line into one per batch. An idle writer writes each line
// at once, so the log is as current as a direct one.
//
// It keeps the order of lines and never splits one: slog hands each record
// to a single Write. Close writes what is pending; lines held when the
// process dies without Close (a crash) are lost: at most what arrived
// during one write.
type LogWriter struct {
	w    io.Writer
	kick chan struct{} // buffered 1: there is something pending
	done chan struct{} // closed when the goroutine has returned

	mu      sync.Mutex
	space   *sync.Cond // broadcast when pending is taken
	pending []byte
	closed  bool
}

// NewLogWriter starts a LogWriter writing to w. Close it before exit.
func NewLogWriter(w io.Writer) *LogWriter {
	l := &LogWriter{w: w, kick: make(chan struct{}, 1), done: make(chan struct{})}
	l.space = sync.NewCond(&l.mu)
	go l.run()
	return l
}

// Write queues p, a whole line. It never fails: a failing destination has
// nowhere to report to. After Close it writes p directly.
func (l *LogWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	for !l.closed && len(l.pending) > 0 && len(l.pending)+len(p) > maxPending {
		l.space.Wait()
	}
	if l.closed {
		l.mu.Unlock()
		<-l.done // after the last batch, in order
		return l.w.Write(p)
	}
	if len(l.pending) == 0 {
		// Under the lock, so that Close cannot close kick in between.
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	l.pending = append(l.pending, p...)
	l.mu.Unlock()
	return len(p), nil
}

// run writes a batch per kick. Whenever pending holds lines a kick is
// buffered, or run has taken one and not yet the batch; so when Close
// closes kick, the last kick brings the last batch.
func (l *LogWriter) run() {
	defer close(l.done)
	var spare []byte
	for range l.kick {
		l.mu.Lock()
		batch := l.pending
		l.pending = spare[:0]
		l.mu.Unlock()
		l.space.Broadcast()
		if len(batch) > 0 {
			_, _ = l.w.Write(batch)
		}
		// A burst's buffer is not kept: an idle writer holds little.
		spare = nil
		if cap(batch) <= 64<<10 {
			spare = batch
		}
	}
}

// Close writes what is pending and stops the goroutine; later writes go
// directly to the destination. It is safe to call more than once.
func (l *LogWriter) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.kick)
	}
	l.mu.Unlock()
	l.space.Broadcast()
	<-l.done
	return nil
}
