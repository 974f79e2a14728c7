package testdata

import "bytes"

// Modules too large to keep as .wat sources are encoded here, so that
// build.sh (through gen/) writes the committed sizes and tests can make
// other sizes on demand.

const manyFuncsGreeting = "many_funcs ok\n"

// ManyFuncs returns a valid WASI command module with n functions besides
// _start: the shape that makes compilers slow while staying small on the
// wire (about 52 bytes a function). Each function takes an i32 and returns
// one after a little arithmetic on two locals; _start calls the first and
// the last and prints "many_funcs ok\n", so that a run proves the module was
// compiled whole. many_funcs.wasm is ManyFuncs(20000).
func ManyFuncs(n int) []byte {
	return funcsModule(n, busyBody)
}

// LongFunction returns a valid WASI command module whose one function is
// ops additions in a straight line (7 bytes each): the shape that costs
// compilers the most memory for its size, since they hold a whole function
// at once. It prints "many_funcs ok\n" like ManyFuncs.
func LongFunction(ops int) []byte {
	return funcsModule(1, func(int) []byte { return longBody(ops) })
}

func funcsModule(n int, funcBody func(int) []byte) []byte {
	var m bytes.Buffer
	m.WriteString("\x00asm\x01\x00\x00\x00")

	// Types: 0 () -> (); 1 (i32) -> i32; 2 fd_write's (i32 i32 i32 i32) -> i32.
	section(&m, 1, vec(3,
		[]byte{0x60, 0, 0},
		[]byte{0x60, 1, 0x7f, 1, 0x7f},
		[]byte{0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 1, 0x7f},
	))
	// Import: wasi_snapshot_preview1.fd_write, function index 0.
	section(&m, 2, vec(1, cat(name("wasi_snapshot_preview1"), name("fd_write"), []byte{0x00, 2})))

	// Functions: f(0..n-1) of type 1 at indexes 1..n, then _start (type 0).
	var fs bytes.Buffer
	fs.Write(uleb(uint64(n + 1)))
	for range n {
		fs.WriteByte(1)
	}
	fs.WriteByte(0)
	section(&m, 3, fs.Bytes())

	section(&m, 5, vec(1, []byte{0x00, 1})) // memory: min 1 page
	section(&m, 7, vec(2,
		cat(name("memory"), []byte{0x02, 0}),
		cat(name("_start"), []byte{0x00}, uleb(uint64(n+1))),
	))

	var code bytes.Buffer
	code.Write(uleb(uint64(n + 1)))
	for i := range n {
		body := funcBody(i)
		code.Write(uleb(uint64(len(body))))
		code.Write(body)
	}
	start := startBody(n)
	code.Write(uleb(uint64(len(start))))
	code.Write(start)
	section(&m, 10, code.Bytes())

	// Data: the iovec {16, len} at 0 and the greeting at 16.
	iov := []byte{16, 0, 0, 0, byte(len(manyFuncsGreeting)), 0, 0, 0}
	seg := func(off byte, b []byte) []byte {
		return cat([]byte{0x00, 0x41, off, 0x0b}, uleb(uint64(len(b))), b)
	}
	section(&m, 11, vec(2, seg(0, iov), seg(16, []byte(manyFuncsGreeting))))
	return m.Bytes()
}

// busyBody: local $a i32, $b i32;
// a = p + i; b = a * a; b = (b xor a) rotl 7; if b & 1 { a = a - b }; a + b
func busyBody(i int) []byte {
	return cat(
		[]byte{1, 2, 0x7f, 0x20, 0, 0x41}, // 2 locals of i32; local.get 0; i32.const
		sleb(int64(i)),
		[]byte{
			0x6a, 0x21, 1, // i32.add, local.set 1
			0x20, 1, 0x20, 1, 0x6c, 0x21, 2, // b = a*a
			0x20, 2, 0x20, 1, 0x73, 0x41, 7, 0x77, 0x21, 2, // b = (b^a) rotl 7
			0x20, 2, 0x41, 1, 0x71, 0x04, 0x40, // if (b & 1)
			0x20, 1, 0x20, 2, 0x6b, 0x21, 1, // a = a - b
			0x0b,                         // end
			0x20, 1, 0x20, 2, 0x6a, 0x0b, // a + b, end
		})
}

// longBody: p = p + 1, ops times, then p.
func longBody(ops int) []byte {
	b := make([]byte, 0, 1+7*ops+3)
	b = append(b, 0) // no locals
	for range ops {
		b = append(b, 0x20, 0, 0x41, 1, 0x6a, 0x21, 0)
	}
	return append(b, 0x20, 0, 0x0b)
}

// startBody calls f(0) and f(n-1), drops both, and writes the greeting.
func startBody(n int) []byte {
	return cat(
		[]byte{0, 0x41, 1, 0x10, 1, 0x1a, 0x41, 2, 0x10}, // no locals; drop f0(1); i32.const 2; call
		uleb(uint64(n)),
		[]byte{0x1a, 0x41, 1, 0x41, 0, 0x41, 1, 0x41, 8, 0x10, 0, 0x1a, 0x0b}, // drop; fd_write(1, 0, 1, 8)
	)
}

func section(m *bytes.Buffer, id byte, content []byte) {
	m.WriteByte(id)
	m.Write(uleb(uint64(len(content))))
	m.Write(content)
}

func vec(n int, items ...[]byte) []byte { return cat(append([][]byte{uleb(uint64(n))}, items...)...) }

func name(s string) []byte { return append(uleb(uint64(len(s))), s...) }

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func uleb(v uint64) []byte {
	var out []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			c |= 0x80
		}
		out = append(out, c)
		if v == 0 {
			return out
		}
	}
}

func sleb(v int64) []byte {
	var out []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(out, c)
		}
		out = append(out, c|0x80)
	}
}
