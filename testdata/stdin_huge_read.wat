;; stdin_huge_read reads all of stdin, then keeps reading past its end, and
;; prints what it saw:
;;   bad_iov=N    fd_read into an iovec that runs past the end of memory
;;   read=N       bytes read in 64 KiB chunks until EOF
;;   eof_reads=N  of 200000 further reads, how many did not answer "0 bytes"
;; Under the platform: bad_iov=21 (EFAULT), read=len(stdin), eof_reads=0.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 0: iov; 8: nread/nwritten; 16: scratch iov; 64..127: digits;
  ;; 128..: labels; 65536..131071: the read buffer.
  (data (i32.const 128) "bad_iov=")     ;; 8 bytes
  (data (i32.const 144) "read=")        ;; 5 bytes
  (data (i32.const 160) "eof_reads=")   ;; 10 bytes
  (func $write (param $p i32) (param $n i32)
    (i32.store (i32.const 16) (local.get $p))
    (i32.store (i32.const 20) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 8))))
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
    (local $total i32) (local $n i32) (local $i i32) (local $bad i32)
    ;; An iovec of 2 GiB starting inside memory: the host must refuse it
    ;; without reading stdin into memory that does not exist.
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 0x7fffffff))
    (call $write (i32.const 128) (i32.const 8))
    (call $print_u32 (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    ;; Read to EOF.
    (block $eof
      (loop $read
        (i32.store (i32.const 0) (i32.const 65536))
        (i32.store (i32.const 4) (i32.const 65536))
        (br_if $eof (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $eof (i32.eqz (local.get $n)))
        (local.set $total (i32.add (local.get $total) (local.get $n)))
        (br $read)))
    (call $write (i32.const 144) (i32.const 5))
    (call $print_u32 (local.get $total))
    ;; Keep reading past the end.
    (loop $again
      (i32.store (i32.const 0) (i32.const 65536))
      (i32.store (i32.const 4) (i32.const 65536))
      (i32.store (i32.const 8) (i32.const 0))
      (if (i32.or
            (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
            (i32.load (i32.const 8)))
        (then (local.set $bad (i32.add (local.get $bad) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 200000))))
    (call $write (i32.const 160) (i32.const 10))
    (call $print_u32 (local.get $bad))))
