;; bigtable declares a table of 10,000,000 funcref elements, memory that no
;; linear-memory limit covers.
(module
  (memory (export "memory") 1)
  (table 10000000 funcref)
  (func (export "_start")))
