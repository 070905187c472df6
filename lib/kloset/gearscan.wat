;; The gear-hash scan of the chunker (chunker.ts), in WebAssembly: ~2.4x the speed of the same loop in
;; JavaScript on this machine (no bounds checks on the table lookup, no int32 tagging).
;; `npm run build:wasm` turns this file into gearscan.wasm.ts; a test checks that the two match.
;;
;; Memory (shared with JavaScript, and readable by the image-hash thread): the gear table of 256
;; int32 at address 0, the chunker's window after it.
(module
  (import "env" "memory" (memory 1 65536 shared))
  ;; The hash where the last scan stopped without a match: the large-mask scan goes on from it.
  (global $h (mut i32) (i32.const 0))
  (func (export "lastHash") (result i32) (global.get $h))

  ;; Rolls h over the bytes at [p, to): h = (h << 1) + gear[byte]. Returns the address of the first
  ;; byte after which (h & mask) == 0, or -1 (with h kept in the global). Unrolled by four.
  (func (export "scan") (param $p i32) (param $to i32) (param $mask i32) (param $h i32) (result i32)
    (local $end4 i32)
    (local.set $end4 (i32.sub (local.get $to) (i32.const 3)))
    (block $tail
      (loop $four
        (br_if $tail (i32.ge_s (local.get $p) (local.get $end4)))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
                               (i32.load (i32.shl (i32.load8_u (local.get $p)) (i32.const 2)))))
        (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
          (then (return (local.get $p))))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
                               (i32.load (i32.shl (i32.load8_u offset=1 (local.get $p)) (i32.const 2)))))
        (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
          (then (return (i32.add (local.get $p) (i32.const 1)))))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
                               (i32.load (i32.shl (i32.load8_u offset=2 (local.get $p)) (i32.const 2)))))
        (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
          (then (return (i32.add (local.get $p) (i32.const 2)))))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
                               (i32.load (i32.shl (i32.load8_u offset=3 (local.get $p)) (i32.const 2)))))
        (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
          (then (return (i32.add (local.get $p) (i32.const 3)))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $four)))
    (block $done
      (loop $one
        (br_if $done (i32.ge_s (local.get $p) (local.get $to)))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
                               (i32.load (i32.shl (i32.load8_u (local.get $p)) (i32.const 2)))))
        (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
          (then (return (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $one)))
    (global.set $h (local.get $h))
    (i32.const -1))
)
