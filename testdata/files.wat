;; files tries to reach a filesystem and prints the errno of each attempt:
;;   fd_prestat_get=N   (is there a preopened directory at fd 3?)
;;   path_open=N        (open "etc/passwd" under fd 3)
;;   path_open_root=N   (open "/etc/passwd" under fd 0)
;; then returns from _start. With no filesystem none is 0 (success): under
;; wazero they are 8 (EBADF), 8 and 63 (EPERM).
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0: iov; 8: nwritten; 16: prestat / opened fd scratch; 64..127: digits.
  (data (i32.const 128) "fd_prestat_get=")   ;; 15 bytes
  (data (i32.const 160) "path_open=")        ;; 10 bytes
  (data (i32.const 192) "path_open_root=")   ;; 15 bytes
  (data (i32.const 224) "etc/passwd")        ;; 10 bytes
  (data (i32.const 256) "/etc/passwd")       ;; 11 bytes
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
    (call $write (i32.const 128) (i32.const 15))
    (call $print_u32 (call $fd_prestat_get (i32.const 3) (i32.const 16)))
    (call $write (i32.const 160) (i32.const 10))
    (call $print_u32 (call $path_open (i32.const 3) (i32.const 0) (i32.const 224) (i32.const 10)
      (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 16)))
    (call $write (i32.const 192) (i32.const 15))
    (call $print_u32 (call $path_open (i32.const 0) (i32.const 0) (i32.const 256) (i32.const 11)
      (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 16)))))
