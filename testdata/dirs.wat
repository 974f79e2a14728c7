;; dirs tries to list, open and change directories through WASI preview 1,
;; climbing with "../" where a path is taken, and prints each errno:
;;   prestat_dir_name3=N  the name of a pre-opened directory at fd 3
;;   readdir3=N           list fd 3
;;   readdir0=N           list stdin
;;   open_dotdot3=N       path_open "../../../etc" (O_DIRECTORY) under fd 3
;;   open_dotdot0=N       path_open "../etc/passwd" under stdin
;;   open_root3=N         path_open "/" (O_DIRECTORY) under fd 3
;;   filestat3=N          path_filestat_get "../" under fd 3
;;   mkdir3=N             path_create_directory "../wwz" under fd 3
;;   unlink3=N            path_unlink_file "../wwz" under fd 3
;;   rmdir3=N             path_remove_directory "../wwz" under fd 3
;;   symlink3=N           path_symlink "/etc/passwd" -> "link" under fd 3
;;   rename3=N            path_rename "../a" -> "../b" under fd 3
;;   readlink3=N          path_readlink "link" under fd 3
;; then returns from _start. With no filesystem none is 0 (success).
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name"
    (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir"
    (func $fd_readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get"
    (func $path_filestat_get (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_create_directory"
    (func $path_create_directory (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_unlink_file"
    (func $path_unlink_file (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_remove_directory"
    (func $path_remove_directory (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink"
    (func $path_symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_rename"
    (func $path_rename (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_readlink"
    (func $path_readlink (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0: iov; 8: nwritten; 16..31: results; 64..127: digits;
  ;; 128..511: labels; 512..767: paths; 1024..: buffers.
  (data (i32.const 128) "prestat_dir_name3=") ;; 18
  (data (i32.const 160) "readdir3=")          ;; 9
  (data (i32.const 176) "readdir0=")          ;; 9
  (data (i32.const 192) "open_dotdot3=")      ;; 13
  (data (i32.const 208) "open_dotdot0=")      ;; 13
  (data (i32.const 224) "open_root3=")        ;; 11
  (data (i32.const 240) "filestat3=")         ;; 10
  (data (i32.const 256) "mkdir3=")            ;; 7
  (data (i32.const 272) "unlink3=")           ;; 8
  (data (i32.const 288) "rmdir3=")            ;; 7
  (data (i32.const 304) "symlink3=")          ;; 9
  (data (i32.const 320) "rename3=")           ;; 8
  (data (i32.const 336) "readlink3=")         ;; 10
  (data (i32.const 512) "../../../etc")       ;; 12
  (data (i32.const 528) "../etc/passwd")      ;; 13
  (data (i32.const 544) "/")                  ;; 1
  (data (i32.const 560) "../")                ;; 3
  (data (i32.const 576) "../wwz")             ;; 6
  (data (i32.const 592) "/etc/passwd")        ;; 11
  (data (i32.const 608) "link")               ;; 4
  (data (i32.const 624) "../a")               ;; 4
  (data (i32.const 640) "../b")               ;; 4
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
  (func $report (param $label i32) (param $len i32) (param $errno i32)
    (call $write (local.get $label) (local.get $len))
    (call $print_u32 (local.get $errno)))
  (func (export "_start")
    (call $report (i32.const 128) (i32.const 18)
      (call $fd_prestat_dir_name (i32.const 3) (i32.const 1024) (i32.const 64)))
    (call $report (i32.const 160) (i32.const 9)
      (call $fd_readdir (i32.const 3) (i32.const 1024) (i32.const 1024) (i64.const 0) (i32.const 16)))
    (call $report (i32.const 176) (i32.const 9)
      (call $fd_readdir (i32.const 0) (i32.const 1024) (i32.const 1024) (i64.const 0) (i32.const 16)))
    ;; oflags 2 = O_DIRECTORY; dirflags 1 = follow symlinks; every right.
    (call $report (i32.const 192) (i32.const 13)
      (call $path_open (i32.const 3) (i32.const 1) (i32.const 512) (i32.const 12)
        (i32.const 2) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 16)))
    (call $report (i32.const 208) (i32.const 13)
      (call $path_open (i32.const 0) (i32.const 1) (i32.const 528) (i32.const 13)
        (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 16)))
    (call $report (i32.const 224) (i32.const 11)
      (call $path_open (i32.const 3) (i32.const 1) (i32.const 544) (i32.const 1)
        (i32.const 2) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 16)))
    (call $report (i32.const 240) (i32.const 10)
      (call $path_filestat_get (i32.const 3) (i32.const 1) (i32.const 560) (i32.const 3) (i32.const 1024)))
    (call $report (i32.const 256) (i32.const 7)
      (call $path_create_directory (i32.const 3) (i32.const 576) (i32.const 6)))
    (call $report (i32.const 272) (i32.const 8)
      (call $path_unlink_file (i32.const 3) (i32.const 576) (i32.const 6)))
    (call $report (i32.const 288) (i32.const 7)
      (call $path_remove_directory (i32.const 3) (i32.const 576) (i32.const 6)))
    (call $report (i32.const 304) (i32.const 9)
      (call $path_symlink (i32.const 592) (i32.const 11) (i32.const 3) (i32.const 608) (i32.const 4)))
    (call $report (i32.const 320) (i32.const 8)
      (call $path_rename (i32.const 3) (i32.const 624) (i32.const 4) (i32.const 3) (i32.const 640) (i32.const 4)))
    (call $report (i32.const 336) (i32.const 10)
      (call $path_readlink (i32.const 3) (i32.const 608) (i32.const 4) (i32.const 1024) (i32.const 64) (i32.const 16)))))
