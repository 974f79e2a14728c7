package runner

import "sync"

// cappedWriter keeps at most limit bytes and silently drops the rest. It
// reports every write as complete, so a guest flooding its output keeps
// running (and is stopped by its deadline), instead of seeing an error it
// might retry forever or treat as a crash.
type cappedWriter struct {
	buf       []byte
	limit     int
	truncated bool
}

func (w *cappedWriter) Write(p []byte) (int, error) {
	room := w.limit - len(w.buf)
	switch {
	case len(p) <= room:
		w.buf = append(w.buf, p...)
	case room > 0:
		w.buf = append(w.buf, p[:room]...)
		w.truncated = true
	case len(p) > 0:
		w.truncated = true
	}
	return len(p), nil
}

// maxPooledOutput keeps an unusually large buffer from being held forever
// by the pool.
const maxPooledOutput = 8 << 20

// outputPool recycles output buffers between executions; Result.Release
// hands them back.
type outputPool struct{ p sync.Pool }

func (o *outputPool) get(limit int) *cappedWriter {
	w, _ := o.p.Get().(*cappedWriter)
	if w == nil {
		w = &cappedWriter{}
	}
	w.buf, w.limit, w.truncated = w.buf[:0], limit, false
	return w
}

func (o *outputPool) put(w *cappedWriter) {
	if w == nil || cap(w.buf) > maxPooledOutput {
		return
	}
	o.p.Put(w)
}
