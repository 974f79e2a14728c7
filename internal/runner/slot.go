package runner

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/sys"
)

// runSlot is what an execution needs besides its arguments and environment:
// a ModuleConfig whose stdin, stdout, stderr and sleep point into the slot,
// and the allocator of its linear memory. wazero's ModuleConfig is
// immutable and each With... copies all of it, its environment map
// included, so building these per run cost four copies; a slot is built
// once and only its contents change from run to run.
//
// A slot serves one execution at a time. It is taken before instantiation
// and handed back only after the instance is closed: by then the guest has
// stopped (Call returns only then), wazero has freed its memory, and the
// slot is emptied before the next run fills it, so that nothing of one run
// (stdin, output, deadline, memory) can reach the next.
type runSlot struct {
	cfg            wazero.ModuleConfig
	stdin          bytes.Reader
	stdout, stderr slotWriter
	mem            linearMemory
	ctx            context.Context // the run's; its end cuts the guest's sleeps short
}

// slotPool recycles runSlots. Slots hold no output and no memory while
// pooled, so the pool dropping them costs only their rebuilding.
type slotPool struct {
	p    sync.Pool
	base wazero.ModuleConfig // the Runner's, which every slot's config extends
}

func (sp *slotPool) get() *runSlot {
	if s, ok := sp.p.Get().(*runSlot); ok {
		return s
	}
	s := &runSlot{}
	s.cfg = sp.base.
		WithStdin(&s.stdin).
		WithStdout(&s.stdout).
		WithStderr(&s.stderr).
		WithNanosleep(s.nanosleep)
	return s
}

// put empties s and keeps it. The caller must be sure no instance using s
// is still open.
func (sp *slotPool) put(s *runSlot) {
	s.clear()
	sp.p.Put(s)
}

// fill prepares s for one execution.
func (s *runSlot) fill(ctx context.Context, stdin []byte, stdout, stderr *cappedWriter, limit uint64, memories *memoryPool) {
	s.stdin.Reset(stdin)
	s.stdout.w, s.stderr.w = stdout, stderr
	s.mem = linearMemory{limit: limit, pool: memories}
	s.ctx = ctx
}

// clear forgets the last execution. Its output buffers belong to its Result
// now, and its memory went back to the pool when wazero freed it; should
// wazero not have, the buffer is dropped rather than pooled, as an instance
// may still hold it.
func (s *runSlot) clear() {
	s.stdin.Reset(nil)
	s.stdout.w, s.stderr.w = nil, nil
	s.mem = linearMemory{}
	s.ctx = nil
}

// nanosleep is the guest's sleep (poll_oneoff on a clock): real time, but
// cut short when the run's context ends, so that a guest asleep for an
// hour is still stopped at its deadline. wazero's WithSysNanosleep sleeps
// through it.
//
// Cut short, it ends the guest the way proc_exit does, with the exit code
// wazero gives a closed context: returning would let the guest run on (and
// perhaps finish "ok") before wazero's watcher marks the module closed.
func (s *runSlot) nanosleep(ns int64) {
	if ns <= 0 {
		return
	}
	ctx := s.ctx
	if ctx == nil {
		// Only a guest outliving its run could sleep now; end it.
		panic(sys.NewExitError(sys.ExitCodeContextCanceled))
	}
	t := time.NewTimer(time.Duration(ns))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		code := sys.ExitCodeContextCanceled
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			code = sys.ExitCodeDeadlineExceeded
		}
		panic(sys.NewExitError(code))
	}
}

// errSlotEmpty is what a write to an emptied slot gets. wazero writes only
// while the guest runs, so it is never seen; it is there so that a bug
// would fail loudly instead of writing into another run's output.
var errSlotEmpty = errors.New("runner: write after the execution ended")

// slotWriter forwards to the current execution's capped writer.
type slotWriter struct{ w *cappedWriter }

var _ io.Writer = (*slotWriter)(nil)

func (sw *slotWriter) Write(p []byte) (int, error) {
	if sw.w == nil {
		return 0, errSlotEmpty
	}
	return sw.w.Write(p)
}
