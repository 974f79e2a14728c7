;; wasi_abuse calls WASI preview 1 functions with hostile arguments and
;; prints each errno; a careful host answers EFAULT (21) or EINVAL (28)
;; without touching memory it does not own or allocating what it is asked:
;;   random_get_huge=N   random_get of 4 GiB - 1 bytes
;;   fd_write_huge=N     fd_write of an iovec running past memory's end
;;   fd_write_iovs=N     fd_write of 100000 iovecs (past the end of memory)
;;   args_get_oob=N      args_get into pointers past memory's end
;;   environ_get_oob=N   environ_get into pointers past memory's end
;;   clock_oob=N         clock_time_get writing past memory's end
;;   fd_write_bad_fd=N   fd_write to fd 99
;; then writes 8192 iovecs of 64 KiB each (512 MiB) to stdout in one call,
;; which the platform must cap, and returns from _start.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get"
    (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 0: iov; 8: nwritten; 64..127: digits; 128..: labels;
  ;; 65536..131071: 8192 iovecs {0, 65536} for the big write.
  (data (i32.const 128) "random_get_huge=")  ;; 16
  (data (i32.const 160) "fd_write_huge=")    ;; 14
  (data (i32.const 176) "fd_write_iovs=")    ;; 14
  (data (i32.const 192) "args_get_oob=")     ;; 13
  (data (i32.const 208) "environ_get_oob=")  ;; 16
  (data (i32.const 240) "clock_oob=")        ;; 10
  (data (i32.const 256) "fd_write_bad_fd=")  ;; 16
  (func $write (param $p i32) (param $n i32)
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $print_u32 (param $v i32)
    (local $p i32)
    (local.set $p (i32.const 127))
    (i32.store8 (local.get $p) (i32.const 10))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $v) (i32.const 0))))
    (call $write (local.get $p) (i32.sub (i32.const 128) (local.get $p))))
  (func $report (param $label i32) (param $len i32) (param $errno i32)
    (call $write (local.get $label) (local.get $len))
    (call $print_u32 (local.get $errno)))
  (func (export "_start")
    (local $i i32)
    (call $report (i32.const 128) (i32.const 16)
      (call $random_get (i32.const 1024) (i32.const -1)))
    ;; iov at 32: {1024, 0x7fffffff}
    (i32.store (i32.const 32) (i32.const 1024))
    (i32.store (i32.const 36) (i32.const 0x7fffffff))
    (call $report (i32.const 160) (i32.const 14)
      (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 8)))
    (call $report (i32.const 176) (i32.const 14)
      (call $fd_write (i32.const 1) (i32.const 65536) (i32.const 100000) (i32.const 8)))
    (call $report (i32.const 192) (i32.const 13)
      (call $args_get (i32.const 0x7ffffff0) (i32.const 0x7ffffff8)))
    (call $report (i32.const 208) (i32.const 16)
      (call $environ_get (i32.const 0x7ffffff0) (i32.const 0x7ffffff8)))
    (call $report (i32.const 240) (i32.const 10)
      (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 0x7ffffffc)))
    (call $report (i32.const 256) (i32.const 16)
      (call $fd_write (i32.const 99) (i32.const 0) (i32.const 1) (i32.const 8)))
    ;; 8192 iovecs of the whole first page, repeated 64 KiB each.
    (loop $fill
      (i32.store (i32.add (i32.const 65536) (i32.shl (local.get $i) (i32.const 3))) (i32.const 0))
      (i32.store (i32.add (i32.const 65540) (i32.shl (local.get $i) (i32.const 3))) (i32.const 65536))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $i) (i32.const 8192))))
    (drop (call $fd_write (i32.const 1) (i32.const 65536) (i32.const 8192) (i32.const 8)))))
