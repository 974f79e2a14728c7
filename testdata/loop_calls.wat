;; loop_calls prints "before loop\n", then loops forever calling a function.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "before loop\n")
  (global $acc (mut i32) (i32.const 0))
  (func $step (param $x i32) (result i32)
    (i32.xor (i32.mul (local.get $x) (i32.const 1103515245)) (i32.const 12345)))
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 12))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (loop $spin
      (global.set $acc (call $step (global.get $acc)))
      (br $spin))))
