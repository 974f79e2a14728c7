package runner

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// This file reads the binary format ahead of wazero, for two reasons.
//
// It learns the facts that wazero's CompiledModule does not expose but the
// platform's rules need: every import (of any kind), the declared sizes of
// tables and memories (including ones that are not exported), the export
// names, and whether any function body grows a table.
//
// And it guards wazero's decoder, which sizes its slices from the counts a
// module declares before reading the items: a 20-byte upload claiming 2^32
// locals or parameters makes it allocate tens of gigabytes and kills the
// process (found by FuzzValidate). So every section is walked here first;
// a count larger than the bytes left to hold its items, or past the
// implementation limits of the WebAssembly JS API (which browsers enforce,
// so real toolchains stay within them), rejects the module before wazero
// sees it. What wazero then allocates is proportional to the module's size.
//
// It is not a validator: wazero validates. It only has to read valid
// modules correctly and fail, without panicking, on anything else.

// Section ids of the binary format.
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
	secTag       = 13
)

var sectionNames = [...]string{"custom", "type", "import", "function", "table", "memory",
	"global", "export", "start", "element", "code", "data", "data count", "tag"}

// Implementation limits of the WebAssembly JS API, plus a bound on all the
// locals of a module (wazero keeps 8 bytes per declared local).
const (
	maxTypes        = 1_000_000
	maxFunctions    = 1_000_000
	maxImports      = 100_000
	maxExports      = 100_000
	maxGlobals      = 1_000_000
	maxDataSegments = 100_000
	maxTables       = 100_000
	maxMemories     = 100_000    // wazero allows one; this only bounds the count
	maxElements     = 10_000_000 // entries of all element segments
	maxTags         = 1_000_000
	maxParams       = 1_000
	maxResults      = 1_000
	maxLocals       = 50_000 // per function
	maxTotalLocals  = 5_000_000
	// maxBodySize bounds one function body. Validating or compiling a body
	// costs about 160 times its size in transient memory in either wazero
	// engine: a 7 MB body took the api near 1 GB. 1 MiB (about 165 MB) is
	// four times the largest function of a Go program's 2.6 MB module.
	maxBodySize = 1 << 20
	maxNames    = 1_000_000 // entries of the name section's maps
)

// Import and export kinds.
const (
	kindFunc   = 0x00
	kindTable  = 0x01
	kindMemory = 0x02
	kindGlobal = 0x03
	kindTag    = 0x04
)

type importEntry struct {
	module, name string
	kind         byte
}

type limits struct {
	min, max uint64
	hasMax   bool
}

// moduleFacts is what parseModule learns about a module.
type moduleFacts struct {
	imports []importEntry
	exports []string
	// tables are the tables the module defines itself (imports are listed in
	// imports and refused by policy).
	tables []limits
	// memories are the memories the module defines itself.
	memories []limits
	// grownTables holds the index of every table some function grows with
	// table.grow; tables and imported tables share one index space.
	grownTables map[uint32]bool
	// codeUnknown is set when a function body holds an instruction this
	// reader does not know (a feature wazero allows but this file predates):
	// then any table may be grown, and only declared maximums bound them.
	codeUnknown    bool
	importedTables uint32
	importedFuncs  uint32
	functions      uint32 // declared in the function section
	bodies         uint32 // in the code section
	elements       uint64
	locals         uint64
	// instrs counts the instructions of all function bodies, each br_table
	// target as one more; maxInstrs is the most in one body. Past an
	// instruction this reader does not know, a body's remaining bytes are
	// counted instead: every instruction takes at least one, so the counts
	// stay upper bounds.
	instrs, maxInstrs uint64
	// The other counts validationCost needs. params counts the parameters
	// and results of all types, paramSquares the sum of their squares.
	types, params, paramSquares  uint64
	globals, elemSegments, names uint64
	dataSegments, dataBytes      uint64
}

var errMalformed = errors.New("malformed module")

// parseModule reads the facts of a WebAssembly binary. Its errors wrap
// errMalformed and name a section and an offset, nothing more.
func parseModule(b []byte) (*moduleFacts, error) {
	r := &wreader{b: b}
	if len(b) < 8 || string(b[:4]) != "\x00asm" {
		return nil, fmt.Errorf("%w: not a WebAssembly binary (bad magic number)", errMalformed)
	}
	if b[4] != 1 || b[5] != 0 || b[6] != 0 || b[7] != 0 {
		return nil, fmt.Errorf("%w: unsupported binary format version", errMalformed)
	}
	r.off = 8
	f := &moduleFacts{}
	for r.off < len(r.b) && r.err == nil {
		id := r.byte()
		size := r.u32()
		body := r.bytes(int(size))
		if r.err != nil {
			break
		}
		s := &wreader{b: body}
		switch id {
		case secCustom:
			if s.name() == "name" {
				f.readNames(s)
			}
			s.off = len(s.b)
		case secType:
			f.types += uint64(vec(s, maxTypes, "types", f.readFuncType))
		case secImport:
			vec(s, maxImports, "imports", f.readImport)
		case secFunction:
			n := vec(s, maxFunctions, "functions", func(s *wreader) { s.u32() })
			f.functions = n
			if uint64(f.importedFuncs)+uint64(n) > maxFunctions {
				s.fail("%d functions; the limit is %d", uint64(f.importedFuncs)+uint64(n), maxFunctions)
			}
		case secTable:
			vec(s, maxTables, "tables", func(s *wreader) { f.tables = append(f.tables, s.tableType()) })
		case secMemory:
			vec(s, maxMemories, "memories", func(s *wreader) { f.memories = append(f.memories, s.limits()) })
		case secGlobal:
			f.globals += uint64(vec(s, maxGlobals, "globals", func(s *wreader) {
				s.valType()
				s.byte() // mutability
				skipConstExpr(s)
			}))
		case secExport:
			vec(s, maxExports, "exports", func(s *wreader) {
				name := s.name()
				s.byte() // kind
				s.u32()  // index
				if s.err == nil {
					f.exports = append(f.exports, name)
				}
			})
		case secStart, secDataCount:
			s.u32()
		case secElement:
			f.elemSegments += uint64(vec(s, maxElements, "element segments", f.readElementSegment))
		case secCode:
			vec(s, maxFunctions, "function bodies", f.readBody)
		case secData:
			f.dataSegments += uint64(vec(s, maxDataSegments, "data segments", f.readDataSegment))
		case secTag:
			vec(s, maxTags, "tags", func(s *wreader) {
				s.byte() // attribute
				s.u32()  // type
			})
		default:
			s.fail("unknown section id %d", id)
		}
		if s.err == nil && s.off != len(s.b) {
			s.fail("%d bytes left over", len(s.b)-s.off)
		}
		if s.err != nil {
			name := fmt.Sprintf("id %d", id)
			if int(id) < len(sectionNames) {
				name = sectionNames[id]
			}
			return nil, fmt.Errorf("%w: section %s at offset %d: %v", errMalformed, name, r.off-len(body)+s.off, s.err)
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: at offset %d: %v", errMalformed, r.off, r.err)
	}
	return f, nil
}

// vec reads a vector of items, each read by item. The count must fit the
// bytes left (every item takes at least one) and the limit; what refuses
// it names the items.
func vec(s *wreader, limit uint32, what string, item func(*wreader)) uint32 {
	n := s.count(limit, what)
	for i := uint32(0); i < n && s.err == nil; i++ {
		item(s)
	}
	return n
}

// count reads a vector length, refusing one past limit or one that could
// not fit in what is left of the section.
func (r *wreader) count(limit uint32, what string) uint32 {
	n := r.u32()
	switch {
	case r.err != nil:
	case n > limit:
		r.fail("%d %s; the limit is %d", n, what, limit)
	case int64(n) > int64(len(r.b)-r.off):
		r.fail("%d %s declared, but the section has only %d bytes left", n, what, len(r.b)-r.off)
	}
	if r.err != nil {
		return 0
	}
	return n
}

func (f *moduleFacts) readFuncType(s *wreader) {
	if form := s.byte(); form != 0x60 && s.err == nil {
		s.fail("unsupported type form 0x%x", form)
		return
	}
	n := uint64(vec(s, maxParams, "parameters", (*wreader).valType))
	n += uint64(vec(s, maxResults, "results", (*wreader).valType))
	f.params += n
	f.paramSquares += n * n
}

func (f *moduleFacts) readImport(s *wreader) {
	imp := importEntry{module: s.name(), name: s.name(), kind: s.byte()}
	switch imp.kind {
	case kindFunc:
		s.u32()
		f.importedFuncs++
	case kindTable:
		s.tableType()
		f.importedTables++
	case kindMemory:
		s.limits()
	case kindGlobal:
		s.valType()
		s.byte()
	case kindTag:
		s.byte()
		s.u32()
	default:
		s.fail("unknown import kind 0x%x", imp.kind)
	}
	if s.err == nil {
		f.imports = append(f.imports, imp)
	}
}

func (f *moduleFacts) readElementSegment(s *wreader) {
	flags := s.u32()
	if flags > 7 {
		s.fail("unknown element segment flags %d", flags)
		return
	}
	if flags&0x02 != 0 && flags&0x01 == 0 { // explicit table index
		s.u32()
	}
	if flags&0x01 == 0 { // active: an offset
		skipConstExpr(s)
	}
	if flags&0x03 != 0 { // element kind or reference type
		if flags&0x04 == 0 {
			s.byte() // elemkind
		} else {
			s.valType()
		}
	}
	item := func(s *wreader) { s.u32() } // function index
	if flags&0x04 != 0 {
		item = skipConstExpr
	}
	n := vec(s, maxElements, "elements", item)
	f.elements += uint64(n)
	if f.elements > maxElements {
		s.fail("%d elements in element segments; the limit is %d", f.elements, maxElements)
	}
}

func (f *moduleFacts) readDataSegment(s *wreader) {
	switch flags := s.u32(); flags {
	case 0:
		skipConstExpr(s)
	case 1:
	case 2:
		s.u32() // memory index
		skipConstExpr(s)
	default:
		s.fail("unknown data segment flags %d", flags)
		return
	}
	n := s.u32()
	s.bytes(int(n))
	f.dataBytes += uint64(n)
}

// readNames walks the "name" custom section, whose maps wazero also sizes
// from their declared counts.
func (f *moduleFacts) readNames(s *wreader) {
	for s.err == nil && s.off < len(s.b) {
		id := s.byte()
		sub := &wreader{b: s.bytes(int(s.u32()))}
		if s.err != nil {
			return
		}
		// wazero decodes these three from the content, ignoring the size,
		// and skips the others by their size; so the three must fill their
		// size exactly, or it would read the rest differently from here.
		switch id {
		case 0: // module name
			sub.name()
		case 1: // function names
			f.names += uint64(vec(sub, maxNames, "function names", func(s *wreader) { s.u32(); s.name() }))
		case 2: // local names
			f.names += uint64(vec(sub, maxNames, "local name maps", func(s *wreader) {
				s.u32()
				f.names += uint64(vec(s, maxNames, "local names", func(s *wreader) { s.u32(); s.name() }))
			}))
		default:
			sub.off = len(sub.b)
		}
		if sub.err == nil && sub.off != len(sub.b) {
			sub.fail("subsection %d has %d bytes left over", id, len(sub.b)-sub.off)
		}
		if sub.err != nil {
			s.fail("name section: %v", sub.err)
		}
	}
}

// skipConstExpr skips a constant expression up to and including its end.
func skipConstExpr(s *wreader) {
	var f moduleFacts
	var n uint64
	for s.err == nil {
		if s.off < len(s.b) && s.b[s.off] == 0x0B {
			s.off++
			return
		}
		if !f.skipInstr(s, &n) {
			s.fail("unknown instruction in a constant expression")
		}
	}
}

// readBody reads a function body: its locals, then every instruction,
// looking for table.grow, the one instruction that makes a table larger
// than declared.
func (f *moduleFacts) readBody(s *wreader) {
	size := s.u32()
	if size > maxBodySize && s.err == nil {
		s.fail("a function body of %d bytes; the limit is %d", size, maxBodySize)
		return
	}
	// A value, not a pointer, and no vec: a module may hold a million
	// bodies, and a reader on the heap for each was 100 MB of garbage.
	body := wreader{b: s.bytes(int(size))}
	if s.err != nil {
		return
	}
	var locals uint64
	decls := body.count(maxLocals, "local declarations")
	for i := uint32(0); i < decls && body.err == nil; i++ {
		locals += uint64(body.u32())
		body.valType()
	}
	if body.err == nil && locals > maxLocals {
		body.fail("a function declares %d locals; the limit is %d", locals, maxLocals)
	}
	f.locals += locals
	if body.err == nil && f.locals > maxTotalLocals {
		body.fail("functions declare %d locals in all; the limit is %d", f.locals, maxTotalLocals)
	}
	if body.err != nil {
		s.err = body.err
		return
	}
	f.bodies++
	var n uint64
	for !f.codeUnknown && body.off < len(body.b) {
		start, counted := body.off, n
		if !f.skipInstr(&body, &n) || body.err != nil {
			// A body this reader cannot follow (wazero will say whether it
			// is valid): assume the worst about tables, and count the rest
			// of the body by its bytes.
			f.codeUnknown = true
			body.off, n = start, counted
		}
	}
	n += uint64(len(body.b) - body.off)
	f.instrs += n
	f.maxInstrs = max(f.maxInstrs, n)
}

// skipInstr reads one instruction, recording table.grow and adding it to
// *n (and each br_table target as one more). It reports false for an opcode
// it does not know.
func (f *moduleFacts) skipInstr(r *wreader, n *uint64) bool {
	op := r.byte()
	*n++
	switch {
	case op == 0x02 || op == 0x03 || op == 0x04: // block, loop, if
		r.leb(5) // blocktype: s33
	case op == 0x0C || op == 0x0D: // br, br_if
		r.u32()
	case op == 0x0E: // br_table
		targets := r.u32()
		for i := uint32(0); i <= targets && r.err == nil; i++ {
			r.u32()
		}
		*n += uint64(targets)
	case op == 0x10: // call
		r.u32()
	case op == 0x11: // call_indirect
		r.u32()
		r.u32()
	case op == 0x1C: // select t*
		n := r.u32()
		for i := uint32(0); i < n && r.err == nil; i++ {
			r.valType()
		}
	case op >= 0x20 && op <= 0x26: // local.*, global.*, table.get/set
		r.u32()
	case op >= 0x28 && op <= 0x3E: // loads and stores
		r.memarg()
	case op == 0x3F || op == 0x40: // memory.size, memory.grow
		r.u32()
	case op == 0x41: // i32.const
		r.leb(5)
	case op == 0x42: // i64.const
		r.leb(10)
	case op == 0x43:
		r.bytes(4)
	case op == 0x44:
		r.bytes(8)
	case op == 0x00 || op == 0x01 || op == 0x05 || op == 0x0B || op == 0x0F ||
		op == 0x1A || op == 0x1B || (op >= 0x45 && op <= 0xC4) || op == 0xD1:
		// no immediates
	case op == 0xD0: // ref.null
		r.leb(5)
	case op == 0xD2: // ref.func
		r.u32()
	case op == 0xFC:
		return f.skipFC(r)
	case op == 0xFD:
		return skipSIMD(r)
	default:
		return false
	}
	return true
}

func (f *moduleFacts) skipFC(r *wreader) bool {
	switch sub := r.u32(); {
	case sub <= 7: // saturating truncations
	case sub == 8: // memory.init
		r.u32()
		r.u32()
	case sub == 9, sub == 13, sub == 16, sub == 17: // data.drop, elem.drop, table.size, table.fill
		r.u32()
	case sub == 10: // memory.copy
		r.u32()
		r.u32()
	case sub == 11: // memory.fill
		r.u32()
	case sub == 12, sub == 14: // table.init, table.copy
		r.u32()
		r.u32()
	case sub == 15: // table.grow
		t := r.u32()
		if r.err == nil {
			if f.grownTables == nil {
				f.grownTables = map[uint32]bool{}
			}
			f.grownTables[t] = true
		}
	default:
		return false
	}
	return true
}

func skipSIMD(r *wreader) bool {
	switch sub := r.u32(); {
	case sub <= 11, sub == 92, sub == 93: // loads, store, load_zero
		r.memarg()
	case sub == 12, sub == 13: // v128.const, i8x16.shuffle
		r.bytes(16)
	case sub >= 21 && sub <= 34: // extract_lane, replace_lane
		r.byte()
	case sub >= 84 && sub <= 91: // load_lane, store_lane
		r.memarg()
		r.byte()
	case sub <= 0x113: // the remaining SIMD opcodes take no immediates
	default:
		return false
	}
	return true
}

// wreader reads the binary format. The first error sticks: later reads
// return zero values, so callers check err once after a group of reads.
type wreader struct {
	b   []byte
	off int
	err error
}

func (r *wreader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *wreader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail("unexpected end")
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *wreader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b)-r.off {
		r.fail("unexpected end")
		return nil
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s
}

// leb reads a LEB128 number of at most maxBytes bytes; signed numbers are
// returned raw, which is enough to skip them.
func (r *wreader) leb(maxBytes int) uint64 {
	var v uint64
	for i := 0; i < maxBytes; i++ {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v
		}
	}
	r.fail("integer too long")
	return 0
}

func (r *wreader) u32() uint32 {
	v := r.leb(5)
	if v > 1<<32-1 {
		r.fail("integer too large")
		return 0
	}
	return uint32(v)
}

func (r *wreader) name() string {
	n := r.u32()
	s := r.bytes(int(n))
	if r.err == nil && !utf8.Valid(s) {
		r.fail("name is not UTF-8")
	}
	return string(s)
}

// valType reads a value type, including the two-part reference types of
// the typed-function-references encoding.
func (r *wreader) valType() {
	if c := r.byte(); c == 0x63 || c == 0x64 {
		r.leb(5) // heap type: s33
	}
}

func (r *wreader) limits() limits {
	flags := r.byte()
	width := 5
	if flags&0x04 != 0 { // 64-bit limits
		width = 10
	}
	if flags > 0x07 {
		r.fail("unknown limits flags 0x%x", flags)
		return limits{}
	}
	l := limits{min: r.leb(width)}
	if flags&0x01 != 0 {
		l.max, l.hasMax = r.leb(width), true
	}
	return l
}

func (r *wreader) tableType() limits {
	withInit := false
	if len(r.b) > r.off && r.b[r.off] == 0x40 { // table with an initializer
		r.off++
		if r.byte() != 0 {
			r.fail("bad table prefix")
		}
		withInit = true
	}
	r.valType()
	l := r.limits()
	if withInit {
		skipConstExpr(r)
	}
	return l
}

func (r *wreader) memarg() {
	r.u32() // alignment
	r.leb(10)
}
