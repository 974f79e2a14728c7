;; unknown_wasi imports a name that wasi_snapshot_preview1 does not define.
(module
  (import "wasi_snapshot_preview1" "sock_open_nonexistent"
    (func $sock_open (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $sock_open (i32.const 0) (i32.const 0) (i32.const 0)))))
