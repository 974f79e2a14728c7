;; clock prints the wall clock (clock_time_get, realtime) in nanoseconds since
;; the Unix epoch, "\n", then 16 bytes of random_get as 32 hex digits, "\n".
;; A real clock prints today; a fake one a fixed date. A real random source
;; prints different digits on every run.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get"
    (func $random_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0: iov; 8: nwritten; 64..127: decimal digits; 128: time;
  ;; 256..271: random bytes; 512..544: hex line; 1024: hex alphabet.
  (data (i32.const 1024) "0123456789abcdef")
  (func $write (param $p i32) (param $n i32)
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $print_u64 (param $v i64)
    (local $p i32)
    (local.set $p (i32.const 127))
    (i32.store8 (local.get $p) (i32.const 10))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $v) (i64.const 0))))
    (call $write (local.get $p) (i32.sub (i32.const 128) (local.get $p))))
  (func (export "_start")
    (local $i i32) (local $b i32)
    (drop (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 128)))
    (call $print_u64 (i64.load (i32.const 128)))
    (drop (call $random_get (i32.const 256) (i32.const 16)))
    (loop $hex
      (local.set $b (i32.load8_u (i32.add (i32.const 256) (local.get $i))))
      (i32.store8 (i32.add (i32.const 512) (i32.shl (local.get $i) (i32.const 1)))
        (i32.load8_u (i32.add (i32.const 1024) (i32.shr_u (local.get $b) (i32.const 4)))))
      (i32.store8 (i32.add (i32.const 513) (i32.shl (local.get $i) (i32.const 1)))
        (i32.load8_u (i32.add (i32.const 1024) (i32.and (local.get $b) (i32.const 15)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $hex (i32.lt_u (local.get $i) (i32.const 16))))
    (i32.store8 (i32.const 544) (i32.const 10))
    (call $write (i32.const 512) (i32.const 33))))
