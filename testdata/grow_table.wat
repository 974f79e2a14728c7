;; grow_table declares a table with no maximum and grows it with table.grow
;; in a loop: host memory that no linear-memory limit would cover.
(module
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (func (export "_start")
    (loop $grow
      (drop (table.grow $t (ref.null func) (i32.const 100000000)))
      (br $grow))))
