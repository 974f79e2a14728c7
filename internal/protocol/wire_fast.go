package protocol

import (
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// The envelopes are on every execution's path, twice each way, and
// encoding/json's reflection was a fifth of a worker's CPU per small
// execution. So they are written and read by hand here, under one rule: the
// bytes on the wire stay exactly what encoding/json wrote and read before, so
// that api and workers of different versions keep understanding each other.
//
//   - appendJSON writes byte for byte what json.Marshal writes: same key order
//     and omitempty, same escaping (HTML characters, invalid UTF-8, U+2028 and
//     U+2029), map keys sorted as json.Marshal sorts them. wire_fast_test.go
//     and the FuzzEncode* targets compare the two.
//   - decodeEnvelope reads the compact form json.Marshal writes and nothing
//     else: on anything it does not fully understand (a key it does not
//     expect, in another case or twice, whitespace, null, a fraction, an
//     escape it does not handle, a number that might overflow) it leaves the
//     input to encoding/json, so that the result, errors included, is
//     always encoding/json's. The FuzzDecode*Envelope targets compare the two.

// appendJSON appends the envelope as json.Marshal encodes it.
func (e requestEnvelope) appendJSON(b []byte) []byte {
	b = grow(b, e.sizeHint())
	b = append(b, `{"execution_id":`...)
	b = appendJSONString(b, e.ExecutionID)
	if e.RequestID != "" {
		b = append(b, `,"request_id":`...)
		b = appendJSONString(b, e.RequestID)
	}
	if e.ModuleID != "" {
		b = append(b, `,"module_id":`...)
		b = appendJSONString(b, e.ModuleID)
	}
	b = append(b, `,"module_sha256":`...)
	b = appendJSONString(b, e.ModuleSHA256)
	if e.ModuleName != "" {
		b = append(b, `,"module_name":`...)
		b = appendJSONString(b, e.ModuleName)
	}
	if len(e.Args) > 0 {
		b = append(b, `,"args":[`...)
		for i, a := range e.Args {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, a)
		}
		b = append(b, ']')
	}
	if len(e.Env) > 0 {
		b = append(b, `,"env":`...)
		b = appendJSONMap(b, e.Env)
	}
	b = append(b, `,"timeout_ns":`...)
	b = strconv.AppendInt(b, int64(e.Timeout), 10)
	b = append(b, `,"memory_limit_bytes":`...)
	b = strconv.AppendUint(b, e.MemoryLimitBytes, 10)
	b = append(b, `,"max_output_bytes":`...)
	b = strconv.AppendInt(b, e.MaxOutputBytes, 10)
	b = append(b, `,"stdin_len":`...)
	b = strconv.AppendInt(b, int64(e.StdinLen), 10)
	if e.StdinObject != nil {
		b = append(b, `,"stdin_object":`...)
		b = e.StdinObject.appendJSON(b)
	}
	return append(b, '}')
}

// sizeHint bounds the encoded size when nothing needs escaping, so that
// appendJSON(nil) allocates once.
func (e requestEnvelope) sizeHint() int {
	// Every key, the punctuation and the longest numbers take 290 bytes.
	n := 300 + len(e.ExecutionID) + len(e.RequestID) + len(e.ModuleID) + len(e.ModuleSHA256) + len(e.ModuleName)
	if len(e.Args) > 0 {
		n += len(`,"args":[]`)
		for _, a := range e.Args {
			n += len(a) + 3
		}
	}
	if len(e.Env) > 0 {
		n += len(`,"env":{}`)
		for k, v := range e.Env {
			n += len(k) + len(v) + 6
		}
	}
	if e.StdinObject != nil {
		n += len(e.StdinObject.Name)
	}
	return n
}

// appendJSON appends the envelope as json.Marshal encodes it.
func (e replyEnvelope) appendJSON(b []byte) []byte {
	// As sizeHint: keys, punctuation and the longest numbers take 269 bytes,
	// a failure 35 more, an object reference 56.
	n := 288 + len(e.Status) + len(e.Error) + len(e.Worker)
	if e.Failure != nil {
		n += 40 + len(e.Failure.Code) + len(e.Failure.Message)
	}
	if e.StdoutObject != nil {
		n += 64 + len(e.StdoutObject.Name)
	}
	if e.StderrObject != nil {
		n += 64 + len(e.StderrObject.Name)
	}
	b = grow(b, n)
	b = append(b, '{')
	if e.Status != "" {
		b = append(b, `"status":`...)
		b = appendJSONString(b, e.Status)
		b = append(b, ',')
	}
	b = append(b, `"exit_code":`...)
	b = strconv.AppendUint(b, uint64(e.ExitCode), 10)
	if e.Truncated {
		b = append(b, `,"truncated":true`...)
	}
	if e.Error != "" {
		b = append(b, `,"error":`...)
		b = appendJSONString(b, e.Error)
	}
	b = append(b, `,"duration_ns":`...)
	b = strconv.AppendInt(b, int64(e.Duration), 10)
	b = append(b, `,"memory_peak_bytes":`...)
	b = strconv.AppendUint(b, e.MemoryPeak, 10)
	b = append(b, `,"queue_ns":`...)
	b = strconv.AppendInt(b, int64(e.QueueTime), 10)
	if e.CacheHit {
		b = append(b, `,"cache_hit":true`...)
	}
	if e.Worker != "" {
		b = append(b, `,"worker":`...)
		b = appendJSONString(b, e.Worker)
	}
	if e.Failure != nil {
		b = append(b, `,"failure":{"code":`...)
		b = appendJSONString(b, string(e.Failure.Code))
		b = append(b, `,"message":`...)
		b = appendJSONString(b, e.Failure.Message)
		b = append(b, '}')
	}
	b = append(b, `,"stdout_len":`...)
	b = strconv.AppendInt(b, int64(e.StdoutLen), 10)
	b = append(b, `,"stderr_len":`...)
	b = strconv.AppendInt(b, int64(e.StderrLen), 10)
	if e.StdoutObject != nil {
		b = append(b, `,"stdout_object":`...)
		b = e.StdoutObject.appendJSON(b)
	}
	if e.StderrObject != nil {
		b = append(b, `,"stderr_object":`...)
		b = e.StderrObject.appendJSON(b)
	}
	return append(b, '}')
}

// grow is slices.Grow, whose append of a make is one allocation only where
// the compiler recognises it (not under -race, for one).
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	copy(nb, b)
	return nb
}

func (o *objectRef) appendJSON(b []byte) []byte {
	b = append(b, `{"name":`...)
	b = appendJSONString(b, o.Name)
	b = append(b, `,"size":`...)
	b = strconv.AppendInt(b, o.Size, 10)
	return append(b, '}')
}

// appendJSONMap writes the keys in the order json.Marshal does: sorted by
// their Go bytes, not by their escaped form.
func appendJSONMap(b []byte, m map[string]string) []byte {
	var buf [16]string
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, m[k])
	}
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// jsonSafe holds the ASCII bytes json.Marshal copies unescaped: not control
// characters, '"', '\\', nor, since it escapes HTML, '<', '>' and '&'.
var jsonSafe = func() (safe [utf8.RuneSelf]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		safe[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return safe
}()

// appendJSONString appends s quoted as json.Marshal quotes it (encoding/json's
// appendString with escapeHTML): short escapes for \b \f \n \r \t, \u00XX for
// the other control characters and <, >, &, \ufffd for each byte of invalid
// UTF-8, and \u2028 and \u2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// errNotEnvelope is a programming error: unframe decodes envelopes only.
// Handing anything else to encoding/json would be easy, but then every
// envelope would escape to the heap through that path.
var errNotEnvelope = errors.New("protocol: decode into something other than a non-nil envelope")

// decodeEnvelope is json.Unmarshal(meta, env) for a *requestEnvelope or a
// *replyEnvelope, fast when meta is what json.Marshal writes.
func decodeEnvelope(meta []byte, env any) error {
	switch e := env.(type) {
	case *requestEnvelope:
		if e != nil {
			return e.decode(meta)
		}
	case *replyEnvelope:
		if e != nil {
			return e.decode(meta)
		}
	}
	return errNotEnvelope
}

// decode is json.Unmarshal(meta, e).
func (e *requestEnvelope) decode(meta []byte) error {
	if e.isZero() {
		var fast requestEnvelope
		if fast.decodeFast(meta) {
			*e = fast
			return nil
		}
	}
	// Through a copy, so that e itself does not escape to encoding/json and
	// the callers' envelopes can stay on the stack.
	slow := new(requestEnvelope)
	*slow = *e
	err := json.Unmarshal(meta, slow)
	*e = *slow
	return err
}

// decode is json.Unmarshal(meta, e).
func (e *replyEnvelope) decode(meta []byte) error {
	if e.isZero() {
		var fast replyEnvelope
		if fast.decodeFast(meta) {
			*e = fast
			return nil
		}
	}
	slow := new(replyEnvelope)
	*slow = *e
	err := json.Unmarshal(meta, slow)
	*e = *slow
	return err
}

// isZero guards the fast path, which fills a zero envelope; json.Unmarshal
// into one already filled merges, and that is its business.
func (e *requestEnvelope) isZero() bool {
	return e.ExecutionID == "" && e.RequestID == "" && e.ModuleID == "" && e.ModuleSHA256 == "" &&
		e.ModuleName == "" && e.Args == nil && e.Env == nil && e.Timeout == 0 && e.MemoryLimitBytes == 0 &&
		e.MaxOutputBytes == 0 && e.StdinLen == 0 && e.StdinObject == nil
}

func (e *replyEnvelope) isZero() bool {
	return *e == replyEnvelope{}
}

// decodeFast fills a zero envelope from meta and reports whether it could;
// when it could not, e holds garbage.
func (e *requestEnvelope) decodeFast(meta []byte) bool {
	d, ok := newFastDecoder(meta)
	if !ok {
		return false
	}
	return d.members(func(key string) (bit uint32, ok bool) {
		switch key {
		case "execution_id":
			bit = 1 << 0
			e.ExecutionID, ok = d.str()
		case "request_id":
			bit = 1 << 1
			e.RequestID, ok = d.str()
		case "module_id":
			bit = 1 << 2
			e.ModuleID, ok = d.str()
		case "module_sha256":
			bit = 1 << 3
			e.ModuleSHA256, ok = d.str()
		case "module_name":
			bit = 1 << 4
			e.ModuleName, ok = d.str()
		case "args":
			bit = 1 << 5
			e.Args, ok = d.strings()
		case "env":
			bit = 1 << 6
			e.Env, ok = d.stringMap()
		case "timeout_ns":
			bit = 1 << 7
			var n int64
			n, ok = d.int64()
			e.Timeout = time.Duration(n)
		case "memory_limit_bytes":
			bit = 1 << 8
			e.MemoryLimitBytes, ok = d.uint64()
		case "max_output_bytes":
			bit = 1 << 9
			e.MaxOutputBytes, ok = d.int64()
		case "stdin_len":
			bit = 1 << 10
			e.StdinLen, ok = d.int()
		case "stdin_object":
			bit = 1 << 11
			e.StdinObject, ok = d.objectRef()
		default:
			return 0, false
		}
		return bit, ok
	}) && d.end()
}

// decodeFast fills a zero envelope from meta and reports whether it could;
// when it could not, e holds garbage.
func (e *replyEnvelope) decodeFast(meta []byte) bool {
	d, ok := newFastDecoder(meta)
	if !ok {
		return false
	}
	return d.members(func(key string) (bit uint32, ok bool) {
		switch key {
		case "status":
			bit = 1 << 0
			e.Status, ok = d.str()
		case "exit_code":
			bit = 1 << 1
			e.ExitCode, ok = d.uint32()
		case "truncated":
			bit = 1 << 2
			e.Truncated, ok = d.bool()
		case "error":
			bit = 1 << 3
			e.Error, ok = d.str()
		case "duration_ns":
			bit = 1 << 4
			var n int64
			n, ok = d.int64()
			e.Duration = time.Duration(n)
		case "memory_peak_bytes":
			bit = 1 << 5
			e.MemoryPeak, ok = d.uint64()
		case "queue_ns":
			bit = 1 << 6
			var n int64
			n, ok = d.int64()
			e.QueueTime = time.Duration(n)
		case "cache_hit":
			bit = 1 << 7
			e.CacheHit, ok = d.bool()
		case "worker":
			bit = 1 << 8
			e.Worker, ok = d.str()
		case "failure":
			bit = 1 << 9
			e.Failure, ok = d.failure()
		case "stdout_len":
			bit = 1 << 10
			e.StdoutLen, ok = d.int()
		case "stderr_len":
			bit = 1 << 11
			e.StderrLen, ok = d.int()
		case "stdout_object":
			bit = 1 << 12
			e.StdoutObject, ok = d.objectRef()
		case "stderr_object":
			bit = 1 << 13
			e.StderrObject, ok = d.objectRef()
		default:
			return 0, false
		}
		return bit, ok
	}) && d.end()
}

// fastDecoder reads compact JSON: no whitespace anywhere. Every method
// returns false on anything it does not handle, and the caller gives up.
type fastDecoder struct {
	s string // the whole envelope: unescaped strings are substrings of it
	i int
}

// newFastDecoder copies meta once, so that the strings of the envelope cost
// one allocation between them rather than one each.
func newFastDecoder(meta []byte) (fastDecoder, bool) {
	if len(meta) < 2 || meta[0] != '{' {
		return fastDecoder{}, false
	}
	return fastDecoder{s: string(meta), i: 1}, true
}

// empty consumes the '}' of an object with no member.
func (d *fastDecoder) empty() bool {
	if d.i < len(d.s) && d.s[d.i] == '}' {
		d.i++
		return true
	}
	return false
}

// members reads an object's members, its '{' consumed, through field, which
// reads the value of the member named key and returns the field's bit (a
// power of two of its own, so that a repeated member is caught) and whether
// it could; an unknown key is (0, false).
func (d *fastDecoder) members(field func(key string) (bit uint32, ok bool)) bool {
	if d.empty() {
		return true
	}
	var seen uint32
	for {
		key, ok := d.key()
		if !ok {
			return false
		}
		bit, ok := field(key)
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		more, ok := d.next()
		if !ok {
			return false
		}
		if !more {
			return true
		}
	}
}

// end reports whether the input ends where the envelope did.
func (d *fastDecoder) end() bool { return d.i == len(d.s) }

// next consumes the ',' (more) or '}' (no more) after an object member.
func (d *fastDecoder) next() (more, ok bool) {
	if d.i >= len(d.s) {
		return false, false
	}
	c := d.s[d.i]
	d.i++
	switch c {
	case ',':
		return true, true
	case '}':
		return false, true
	}
	return false, false
}

// key reads a member name and its ':'. Only plain ASCII names are taken: the
// fields' names are, and anything else (an escape, a name json.Unmarshal
// would match case-insensitively) is for encoding/json.
func (d *fastDecoder) key() (string, bool) {
	s := d.s
	if d.i >= len(s) || s[d.i] != '"' {
		return "", false
	}
	start := d.i + 1
	for i := start; i < len(s); i++ {
		c := s[i]
		if c == '"' {
			if i+1 >= len(s) || s[i+1] != ':' {
				return "", false
			}
			d.i = i + 2
			return s[start:i], true
		}
		if c < ' ' || c == '\\' || c >= utf8.RuneSelf {
			return "", false
		}
	}
	return "", false
}

// str reads a string. Invalid UTF-8 (which encoding/json replaces) and
// surrogate escapes (which it pairs or replaces) are not handled.
func (d *fastDecoder) str() (string, bool) {
	s := d.s
	if d.i >= len(s) || s[d.i] != '"' {
		return "", false
	}
	start := d.i + 1
	escaped, wide := false, false
	i := start
	for ; ; i++ {
		if i >= len(s) {
			return "", false
		}
		c := s[i]
		if c == '"' {
			break
		}
		switch {
		case c == '\\':
			escaped = true
			i++ // the escaped byte, checked by unescape
		case c < ' ':
			return "", false
		case c >= utf8.RuneSelf:
			wide = true
		}
	}
	d.i = i + 1
	raw := s[start:i]
	// Escapes are ASCII, so this checks the literal bytes between them.
	if wide && !utf8.ValidString(raw) {
		return "", false
	}
	if !escaped {
		return raw, true
	}
	return unescape(raw)
}

// unescape decodes the escapes of a string's body, which has a byte after
// every backslash.
func unescape(raw string) (string, bool) {
	b := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			b = append(b, c)
			i++
			continue
		}
		switch e := raw[i+1]; e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			if i+6 > len(raw) {
				return "", false
			}
			r, ok := hex4(raw[i+2 : i+6])
			if !ok || (r >= 0xD800 && r <= 0xDFFF) {
				return "", false
			}
			b = utf8.AppendRune(b, r)
			i += 6
			continue
		default:
			return "", false
		}
		i += 2
	}
	return string(b), true
}

func hex4(s string) (rune, bool) {
	var r rune
	for i := 0; i < 4; i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// maxDigits keeps every number the fast path takes far from overflowing any
// of the fields; longer ones are for encoding/json, which knows the limits.
const maxDigits = 18

// digits reads a JSON integer without sign: "0" or a non-zero digit and more.
// A fraction or exponent after it is refused by the caller's next().
func (d *fastDecoder) digits() (uint64, bool) {
	s := d.s
	start := d.i
	var n uint64
	i := start
	if i < len(s) && s[i] == '0' {
		i++
	} else {
		for ; i < len(s) && '0' <= s[i] && s[i] <= '9'; i++ {
			n = n*10 + uint64(s[i]-'0')
		}
	}
	if i == start || i-start > maxDigits {
		return 0, false
	}
	d.i = i
	return n, true
}

func (d *fastDecoder) int64() (int64, bool) {
	neg := d.i < len(d.s) && d.s[d.i] == '-'
	if neg {
		d.i++
	}
	n, ok := d.digits()
	if neg {
		return -int64(n), ok
	}
	return int64(n), ok
}

func (d *fastDecoder) int() (int, bool) {
	n, ok := d.int64()
	if int64(int(n)) != n {
		return 0, false
	}
	return int(n), ok
}

// uint64 takes no sign: encoding/json refuses even "-0" for unsigned fields.
func (d *fastDecoder) uint64() (uint64, bool) { return d.digits() }

func (d *fastDecoder) uint32() (uint32, bool) {
	n, ok := d.digits()
	if uint64(uint32(n)) != n {
		return 0, false
	}
	return uint32(n), ok
}

func (d *fastDecoder) bool() (bool, bool) {
	switch rest := d.s[d.i:]; {
	case len(rest) >= 4 && rest[:4] == "true":
		d.i += 4
		return true, true
	case len(rest) >= 5 && rest[:5] == "false":
		d.i += 5
		return false, true
	}
	return false, false
}

// strings reads an array of strings; "[]" is an empty, non-nil slice, as
// encoding/json makes it.
func (d *fastDecoder) strings() ([]string, bool) {
	s := d.s
	if d.i >= len(s) || s[d.i] != '[' {
		return nil, false
	}
	d.i++
	out := []string{}
	if d.i < len(s) && s[d.i] == ']' {
		d.i++
		return out, true
	}
	for {
		v, ok := d.str()
		if !ok || d.i >= len(s) {
			return nil, false
		}
		out = append(out, v)
		c := s[d.i]
		d.i++
		switch c {
		case ',':
		case ']':
			return out, true
		default:
			return nil, false
		}
	}
}

// stringMap reads an object of strings; "{}" is an empty, non-nil map, as
// encoding/json makes it. A name given twice is left to encoding/json.
func (d *fastDecoder) stringMap() (map[string]string, bool) {
	s := d.s
	if d.i >= len(s) || s[d.i] != '{' {
		return nil, false
	}
	d.i++
	out := map[string]string{}
	if d.empty() {
		return out, true
	}
	for {
		k, ok := d.str()
		if !ok || d.i >= len(s) || s[d.i] != ':' {
			return nil, false
		}
		d.i++
		v, ok := d.str()
		if !ok {
			return nil, false
		}
		if _, dup := out[k]; dup {
			return nil, false
		}
		out[k] = v
		if more, ok := d.next(); !ok {
			return nil, false
		} else if !more {
			return out, true
		}
	}
}

func (d *fastDecoder) objectRef() (*objectRef, bool) {
	if d.i >= len(d.s) || d.s[d.i] != '{' {
		return nil, false
	}
	d.i++
	o := &objectRef{}
	ok := d.members(func(key string) (bit uint32, ok bool) {
		switch key {
		case "name":
			bit = 1 << 0
			o.Name, ok = d.str()
		case "size":
			bit = 1 << 1
			o.Size, ok = d.int64()
		default:
			return 0, false
		}
		return bit, ok
	})
	if !ok {
		return nil, false
	}
	return o, true
}

func (d *fastDecoder) failure() (*Failure, bool) {
	if d.i >= len(d.s) || d.s[d.i] != '{' {
		return nil, false
	}
	d.i++
	f := &Failure{}
	ok := d.members(func(key string) (bit uint32, ok bool) {
		switch key {
		case "code":
			bit = 1 << 0
			var code string
			code, ok = d.str()
			f.Code = FailureCode(code)
		case "message":
			bit = 1 << 1
			f.Message, ok = d.str()
		default:
			return 0, false
		}
		return bit, ok
	})
	if !ok {
		return nil, false
	}
	return f, true
}
