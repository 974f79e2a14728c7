;; sockets tries the WASI preview 1 socket calls and prints each errno:
;;   sock_accept3=N    accept on fd 3 (a pre-opened listener, if any)
;;   sock_accept0=N    accept on stdin
;;   sock_recv3=N      receive on fd 3
;;   sock_recv0=N      receive on stdin
;;   sock_send1=N      send on stdout
;;   sock_shutdown3=N  shut fd 3 down
;; then returns from _start. With no sockets none is 0 (success).
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept"
    (func $sock_accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv"
    (func $sock_recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send"
    (func $sock_send (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_shutdown"
    (func $sock_shutdown (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0: iov; 8: nwritten; 16: scratch iov {1024, 64}; 32..47: results;
  ;; 64..127: digits; 128..: labels; 1024..: data buffer.
  (data (i32.const 128) "sock_accept3=")    ;; 13
  (data (i32.const 144) "sock_accept0=")    ;; 13
  (data (i32.const 160) "sock_recv3=")      ;; 11
  (data (i32.const 176) "sock_recv0=")      ;; 11
  (data (i32.const 192) "sock_send1=")      ;; 11
  (data (i32.const 208) "sock_shutdown3=")  ;; 15
  (data (i32.const 1024) "ping")
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
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 1024))
    (i32.store (i32.const 20) (i32.const 64))
    (call $write (i32.const 128) (i32.const 13))
    (call $print_u32 (call $sock_accept (i32.const 3) (i32.const 0) (i32.const 32)))
    (call $write (i32.const 144) (i32.const 13))
    (call $print_u32 (call $sock_accept (i32.const 0) (i32.const 0) (i32.const 32)))
    (call $write (i32.const 160) (i32.const 11))
    (call $print_u32 (call $sock_recv (i32.const 3) (i32.const 16) (i32.const 1) (i32.const 0) (i32.const 36) (i32.const 40)))
    (call $write (i32.const 176) (i32.const 11))
    (call $print_u32 (call $sock_recv (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 0) (i32.const 36) (i32.const 40)))
    (call $write (i32.const 192) (i32.const 11))
    (i32.store (i32.const 20) (i32.const 4))
    (call $print_u32 (call $sock_send (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 0) (i32.const 36)))
    (call $write (i32.const 208) (i32.const 15))
    (call $print_u32 (call $sock_shutdown (i32.const 3) (i32.const 3)))))
