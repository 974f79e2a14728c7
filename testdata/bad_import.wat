;; bad_import imports a host function the platform does not provide.
(module
  (import "env" "do_evil" (func $do_evil))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $do_evil)))
