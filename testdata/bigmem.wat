;; bigmem declares a minimum memory of 40000 pages (2.5 GiB).
(module
  (memory (export "memory") 40000)
  (func (export "_start")))
