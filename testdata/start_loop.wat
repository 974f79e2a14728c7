;; start_loop spins forever in the wasm start function, which runs while the
;; module is instantiated, before _start is ever looked up.
(module
  (memory (export "memory") 1)
  (func $init
    (loop $spin (br $spin)))
  (start $init)
  (func (export "_start")))
