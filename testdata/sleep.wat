;; sleep prints "sleeping\n", asks poll_oneoff for a one-hour relative sleep
;; on the monotonic clock, then prints "woke\n".
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0: iov; 8: nwritten / nevents; 64: subscription (48 bytes);
  ;; 128: event (32 bytes); 256: text.
  (data (i32.const 256) "sleeping\n")
  (data (i32.const 272) "woke\n")
  (func $write (param $p i32) (param $n i32)
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (call $write (i32.const 256) (i32.const 9))
    (i64.store (i32.const 64) (i64.const 7))                ;; userdata
    (i32.store8 (i32.const 72) (i32.const 0))               ;; tag: clock
    (i32.store (i32.const 80) (i32.const 1))                ;; clock: monotonic
    (i64.store (i32.const 88) (i64.const 3600000000000))    ;; timeout: 1 h
    (i64.store (i32.const 96) (i64.const 0))                ;; precision
    (i32.store16 (i32.const 104) (i32.const 0))             ;; flags: relative
    (drop (call $poll_oneoff (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 8)))
    (call $write (i32.const 272) (i32.const 5))))
