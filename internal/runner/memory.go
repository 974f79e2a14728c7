package runner

import (
	"math/bits"
	"sync"

	"github.com/tetratelabs/wazero/experimental"
)

// linearMemory backs one execution's linear memory. wazero's own page limit
// is per runtime, and one runtime serves every execution of a worker, so
// the per-execution ceiling is enforced here: a grow past limit is refused
// (memory.grow returns -1, as the spec allows) and remembered, so that the
// guest's reaction (a trap or an error exit) is reported as memory_limit.
//
// wazero calls Reallocate only from the goroutine running the guest, and
// Free when the instance is closed, after the guest has stopped; the runner
// reads the fields after the run has returned.
type linearMemory struct {
	limit   uint64 // bytes
	max     uint64 // the module's own maximum, as wazero passes it
	buf     []byte
	box     *[]byte // buf's from the pool, reused to put it back without allocating
	peak    uint64
	refused bool
	pool    *memoryPool
}

func (m *linearMemory) Allocate(capacity, max uint64) experimental.LinearMemory {
	m.max = max
	return m
}

// Reallocate grows the memory to size bytes, keeping its contents. Capacity
// doubles so that a guest growing page by page is not copied every time,
// but never past what the limit and the module's maximum allow.
func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		m.refused = true
		return nil
	}
	m.peak = max(m.peak, size)
	if size <= uint64(cap(m.buf)) {
		// Bytes past the old length are zero (see memoryPool) and were
		// never written: a guest cannot reach past its memory's length, and
		// memories do not shrink.
		m.buf = m.buf[:size]
		return m.buf
	}
	newCap := min(max(size, 2*uint64(cap(m.buf))), m.limit, m.max)
	nb, nbox := m.pool.get(size, newCap, m.limit)
	copy(nb, m.buf)
	m.pool.put(m.buf, m.box)
	m.buf, m.box = nb, nbox
	return nb
}

func (m *linearMemory) Free() {
	m.pool.put(m.buf, m.box)
	m.buf, m.box = nil, nil
}

// memoryPool recycles linear memories of up to maxPooledMemory bytes. Most
// executions use little memory, and allocating it fresh each time (a large
// object for Go's allocator: zeroed, then swept and scavenged) was most of
// the cost of a small cached run. Buffers are pooled by power-of-two
// capacity and zeroed on their way in, so a buffer from the pool is as
// clean as a new one.
type memoryPool struct {
	classes [memoryClasses]sync.Pool // of *[]byte
}

const (
	minPooledMemory = 64 << 10 // one page
	memoryClasses   = 8        // 64 KiB .. 8 MiB
	maxPooledMemory = minPooledMemory << (memoryClasses - 1)
)

// memoryClass is the class whose capacity is the power of two at or above
// n, or -1 past the largest.
func memoryClass(n uint64) int {
	if n <= minPooledMemory {
		return 0
	}
	c := bits.Len64((n - 1) / minPooledMemory) // ceil(log2(n / min))
	if c >= memoryClasses {
		return -1
	}
	return c
}

// get returns a zeroed slice of length size and capacity at least size:
// capHint, or the capacity of size's class when that is within limit. The
// box, when not nil, is the pool's wrapper of the slice (sync.Pool holds
// pointers), to give back to put so that recycling allocates nothing.
func (p *memoryPool) get(size, capHint, limit uint64) (b []byte, box *[]byte) {
	if c := memoryClass(size); c >= 0 && uint64(minPooledMemory)<<c <= max(limit, size) {
		if box, ok := p.classes[c].Get().(*[]byte); ok {
			b := (*box)[:size]
			*box = nil // the box holds nothing while the buffer is in use
			return b, box
		}
		return make([]byte, size, uint64(minPooledMemory)<<c), nil
	}
	return make([]byte, size, capHint), nil
}

// put zeroes b's used part and keeps it for reuse, if it is of a class.
// box is get's, or nil.
func (p *memoryPool) put(b []byte, box *[]byte) {
	c := memoryClass(uint64(cap(b)))
	if c < 0 || uint64(cap(b)) != uint64(minPooledMemory)<<c {
		return
	}
	clear(b) // the part past len(b) was never written
	if box == nil {
		box = new([]byte)
	}
	*box = b[:0]
	p.classes[c].Put(box)
}
