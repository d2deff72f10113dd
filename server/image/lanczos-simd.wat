;; Pillow 9.4's LANCZOS passes for 8-bit images with 128-bit SIMD: the same
;; integer arithmetic as shared/lanczos.ts, so the same bytes out.
;;
;; Assembled by scripts/build-lanczos-wasm.ts (npm run build:wasm) into
;; server/image/lanczos-simd-wasm.ts; server/image/lanczos-simd.ts lays out
;; the memory and calls the two passes.
;;
;; Fixed point as in Pillow: weights are i32 with PRECISION_BITS = 22, each
;; sum starts from the rounding bias 1 << 21, then `>> 22` and clip to 0..255.
;; Sums wrap as i32 here; JavaScript sums exactly in doubles and `>>` reduces
;; modulo 2^32, so both agree whatever the order of the terms and even where
;; a sum overflows. The clip is two saturating narrows: i32 -> i16 (signed;
;; after the shift every value fits) and i16 -> u8 (unsigned: below 0 -> 0,
;; above 255 -> 255), which is Pillow's clip8 exactly.
;;
;; Every window has at least one tap (Pillow's rounding of the window edges
;; guarantees it), so the tap loops test at the bottom.
(module
  (memory (export "memory") 1)

  ;; Horizontal pass over `rows` rows of `ch` samples a pixel (1 to 4),
  ;; keeping the first `bands` (1 to 4, at most `ch`) of each, into `dst`
  ;; (`outW * bands` bytes a row, rows contiguous).
  ;;
  ;; `bounds` holds (xmin, xmax) per output pixel as i32, `weights` the i32
  ;; weights of output pixel x at `weights + 4 * x * kstride`, zero from tap
  ;; xmax on; `kstride` is a multiple of 4.
  ;;
  ;; Four taps at a time: one 16-byte load holds 4 consecutive pixels, a
  ;; swizzle per band spreads that band's 4 samples into the i32 lanes, and
  ;; one multiply by the 4 weights accumulates them; the lanes are added up
  ;; at the end of the window. (This does 3 multiplies per 4 taps of an RGB
  ;; pixel where widening one pixel per tap does 4, and needs about half the
  ;; instructions: on the development machine the horizontal pass of
  ;; 4032x3024 -> 224 took 45 ms that way, 18 ms this way.) The 4-tap groups read up to 15 bytes past a window
  ;; (weights there are 0), and each output pixel is stored as 4 bytes of
  ;; which the next pixel overwrites those past `bands`: the caller pads the
  ;; source and destination by 16 bytes.
  (func (export "horizontal")
    (param $src i32) (param $stride i32) (param $ch i32) (param $rows i32)
    (param $outW i32) (param $bounds i32) (param $weights i32) (param $kstride i32)
    (param $bands i32) (param $dst i32)
    (local $lane0 v128)
    (if (i32.eq (local.get $bands) (i32.const 3))
      (then
        (if (i32.eq (local.get $ch) (i32.const 3))
          (then
            (call $horizontalRgb
              (local.get $src) (local.get $stride) (local.get $rows)
              (local.get $outW) (local.get $bounds) (local.get $weights) (local.get $kstride)
              (local.get $dst))
            (return)))
        (if (i32.eq (local.get $ch) (i32.const 4))
          (then
            (call $horizontalRgba
              (local.get $src) (local.get $stride) (local.get $rows)
              (local.get $outW) (local.get $bounds) (local.get $weights) (local.get $kstride)
              (local.get $dst))
            (return)))))
    ;; Lane i of band b's swizzle takes byte i*ch + b into the low byte of
    ;; the i32 lane; the other bytes' index 0x80 is out of range and gives 0.
    ;; Bands past `bands` are summed and dropped; their masks stay within the
    ;; 16 loaded bytes (3 * 4 + 3 = 15).
    (local.set $lane0
      (i32x4.add
        (i32x4.mul (v128.const i32x4 0 1 2 3) (i32x4.splat (local.get $ch)))
        (v128.const i32x4 0x80808000 0x80808000 0x80808000 0x80808000)))
    (call $horizontalAny
      (local.get $src) (local.get $stride) (local.get $ch) (local.get $rows)
      (local.get $outW) (local.get $bounds) (local.get $weights) (local.get $kstride)
      (local.get $bands) (local.get $dst)
      (local.get $lane0)
      (i32x4.add (local.get $lane0) (v128.const i32x4 1 1 1 1))
      (i32x4.add (local.get $lane0) (v128.const i32x4 2 2 2 2))
      (i32x4.add (local.get $lane0) (v128.const i32x4 3 3 3 3))))

  ;; Three bands out of RGB, the model's case. Lane i of band b's swizzle
  ;; takes byte 3i + b into the low byte of its i32; index 0x80 is out of
  ;; range and gives 0. The masks are constants so that each swizzle is one
  ;; byte shuffle: a mask known only at run time costs one more instruction
  ;; a swizzle (to make the out-of-range indices zero the lane), and the pass
  ;; took 25 ms instead of 18 for 4032x3024 -> 224.
  (func $horizontalRgb
    (param $src i32) (param $stride i32) (param $rows i32)
    (param $outW i32) (param $bounds i32) (param $weights i32) (param $kstride i32)
    (param $dst i32)
    (local $y i32) (local $row i32) (local $x i32) (local $b i32)
    (local $p i32) (local $wp i32) (local $wend i32) (local $wrow i32)
    (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $px v128) (local $w v128)
    (local $t v128) (local $u v128)
    (if (i32.or (i32.eqz (local.get $rows)) (i32.eqz (local.get $outW))) (then (return)))
    (local.set $wrow (i32.shl (local.get $kstride) (i32.const 2)))
    (local.set $row (local.get $src))
    (loop $rows
      (local.set $x (i32.const 0))
      (local.set $b (local.get $bounds))
      (local.set $wp (local.get $weights))
      (loop $pixels
        (local.set $p
          (i32.add (local.get $row) (i32.mul (i32.load (local.get $b)) (i32.const 3))))
        ;; The window's taps rounded up to a multiple of 4.
        (local.set $wend
          (i32.add (local.get $wp)
            (i32.and
              (i32.add (i32.shl (i32.load offset=4 (local.get $b)) (i32.const 2)) (i32.const 12))
              (i32.const -16))))
        (local.set $s0 (v128.const i64x2 0 0))
        (local.set $s1 (v128.const i64x2 0 0))
        (local.set $s2 (v128.const i64x2 0 0))
        (loop $rgb
          (local.set $px (v128.load (local.get $p)))
          (local.set $w (v128.load (local.get $wp)))
          (local.set $s0
            (i32x4.add (local.get $s0)
              (i32x4.mul (i8x16.swizzle (local.get $px) (v128.const i32x4 0x80808000 0x80808003 0x80808006 0x80808009)) (local.get $w))))
          (local.set $s1
            (i32x4.add (local.get $s1)
              (i32x4.mul (i8x16.swizzle (local.get $px) (v128.const i32x4 0x80808001 0x80808004 0x80808007 0x8080800a)) (local.get $w))))
          (local.set $s2
            (i32x4.add (local.get $s2)
              (i32x4.mul (i8x16.swizzle (local.get $px) (v128.const i32x4 0x80808002 0x80808005 0x80808008 0x8080800b)) (local.get $w))))
          (local.set $p (i32.add (local.get $p) (i32.const 12)))
          (local.set $wp (i32.add (local.get $wp) (i32.const 16)))
          (br_if $rgb (i32.lt_u (local.get $wp) (local.get $wend))))
        ;; Lane sums: t = (s0[0]+s0[2], s0[1]+s0[3], s1[0]+s1[2], s1[1]+s1[3]),
        ;; u likewise for s2 (twice), then (sum s0, sum s1, sum s2, sum s2).
        (local.set $t
          (i32x4.add
            (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $s0) (local.get $s1))
            (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $s0) (local.get $s1))))
        (local.set $u
          (i32x4.add
            (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $s2) (local.get $s2))
            (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $s2) (local.get $s2))))
        (local.set $t
          (i32x4.add
            (i32x4.add
              (i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27 (local.get $t) (local.get $u))
              (i8x16.shuffle 4 5 6 7 12 13 14 15 20 21 22 23 28 29 30 31 (local.get $t) (local.get $u)))
            (v128.const i32x4 0x200000 0x200000 0x200000 0x200000)))
        (local.set $t (i32x4.shr_s (local.get $t) (i32.const 22)))
        (local.set $t (i16x8.narrow_i32x4_s (local.get $t) (local.get $t)))
        (local.set $t (i8x16.narrow_i16x8_u (local.get $t) (local.get $t)))
        (v128.store32_lane 0 (local.get $dst) (local.get $t))
        (local.set $dst (i32.add (local.get $dst) (i32.const 3)))
        ;; Next output pixel: its bounds and its row of weights.
        (local.set $b (i32.add (local.get $b) (i32.const 8)))
        (local.set $wp
          (i32.add (local.get $weights)
            (i32.mul (local.tee $x (i32.add (local.get $x) (i32.const 1))) (local.get $wrow))))
        (br_if $pixels (i32.lt_u (local.get $x) (local.get $outW))))
      (local.set $row (i32.add (local.get $row) (local.get $stride)))
      (br_if $rows (i32.lt_u (local.tee $y (i32.add (local.get $y) (i32.const 1))) (local.get $rows)))))

  ;; Three bands out of RGBA: $horizontalRgb with 4 samples a pixel (masks
  ;; and step). Not one function with the channel count tested per pixel:
  ;; that cost the RGB case a third of its speed on short windows.
  (func $horizontalRgba
    (param $src i32) (param $stride i32) (param $rows i32)
    (param $outW i32) (param $bounds i32) (param $weights i32) (param $kstride i32)
    (param $dst i32)
    (local $y i32) (local $row i32) (local $x i32) (local $b i32)
    (local $p i32) (local $wp i32) (local $wend i32) (local $wrow i32)
    (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $px v128) (local $w v128)
    (local $t v128) (local $u v128)
    (if (i32.or (i32.eqz (local.get $rows)) (i32.eqz (local.get $outW))) (then (return)))
    (local.set $wrow (i32.shl (local.get $kstride) (i32.const 2)))
    (local.set $row (local.get $src))
    (loop $rows
      (local.set $x (i32.const 0))
      (local.set $b (local.get $bounds))
      (local.set $wp (local.get $weights))
      (loop $pixels
        (local.set $p
          (i32.add (local.get $row) (i32.shl (i32.load (local.get $b)) (i32.const 2))))
        ;; The window's taps rounded up to a multiple of 4.
        (local.set $wend
          (i32.add (local.get $wp)
            (i32.and
              (i32.add (i32.shl (i32.load offset=4 (local.get $b)) (i32.const 2)) (i32.const 12))
              (i32.const -16))))
        (local.set $s0 (v128.const i64x2 0 0))
        (local.set $s1 (v128.const i64x2 0 0))
        (local.set $s2 (v128.const i64x2 0 0))
        (loop $rgba
          (local.set $px (v128.load (local.get $p)))
          (local.set $w (v128.load (local.get $wp)))
          (local.set $s0
            (i32x4.add (local.get $s0)
              (i32x4.mul (i8x16.swizzle (local.get $px) (v128.const i32x4 0x80808000 0x80808004 0x80808008 0x8080800c)) (local.get $w))))
          (local.set $s1
            (i32x4.add (local.get $s1)
              (i32x4.mul (i8x16.swizzle (local.get $px) (v128.const i32x4 0x80808001 0x80808005 0x80808009 0x8080800d)) (local.get $w))))
          (local.set $s2
            (i32x4.add (local.get $s2)
              (i32x4.mul (i8x16.swizzle (local.get $px) (v128.const i32x4 0x80808002 0x80808006 0x8080800a 0x8080800e)) (local.get $w))))
          (local.set $p (i32.add (local.get $p) (i32.const 16)))
          (local.set $wp (i32.add (local.get $wp) (i32.const 16)))
          (br_if $rgba (i32.lt_u (local.get $wp) (local.get $wend))))
        ;; Lane sums: t = (s0[0]+s0[2], s0[1]+s0[3], s1[0]+s1[2], s1[1]+s1[3]),
        ;; u likewise for s2 (twice), then (sum s0, sum s1, sum s2, sum s2).
        (local.set $t
          (i32x4.add
            (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $s0) (local.get $s1))
            (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $s0) (local.get $s1))))
        (local.set $u
          (i32x4.add
            (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $s2) (local.get $s2))
            (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $s2) (local.get $s2))))
        (local.set $t
          (i32x4.add
            (i32x4.add
              (i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27 (local.get $t) (local.get $u))
              (i8x16.shuffle 4 5 6 7 12 13 14 15 20 21 22 23 28 29 30 31 (local.get $t) (local.get $u)))
            (v128.const i32x4 0x200000 0x200000 0x200000 0x200000)))
        (local.set $t (i32x4.shr_s (local.get $t) (i32.const 22)))
        (local.set $t (i16x8.narrow_i32x4_s (local.get $t) (local.get $t)))
        (local.set $t (i8x16.narrow_i16x8_u (local.get $t) (local.get $t)))
        (v128.store32_lane 0 (local.get $dst) (local.get $t))
        (local.set $dst (i32.add (local.get $dst) (i32.const 3)))
        ;; Next output pixel: its bounds and its row of weights.
        (local.set $b (i32.add (local.get $b) (i32.const 8)))
        (local.set $wp
          (i32.add (local.get $weights)
            (i32.mul (local.tee $x (i32.add (local.get $x) (i32.const 1))) (local.get $wrow))))
        (br_if $pixels (i32.lt_u (local.get $x) (local.get $outW))))
      (local.set $row (i32.add (local.get $row) (local.get $stride)))
      (br_if $rows (i32.lt_u (local.tee $y (i32.add (local.get $y) (i32.const 1))) (local.get $rows)))))

  ;; Any other bands and channels (1 to 4): four sums, stored as 4 bytes,
  ;; `bands` of them kept; the swizzle masks come from the caller.
  (func $horizontalAny
    (param $src i32) (param $stride i32) (param $ch i32) (param $rows i32)
    (param $outW i32) (param $bounds i32) (param $weights i32) (param $kstride i32)
    (param $bands i32) (param $dst i32)
    (param $m0 v128) (param $m1 v128) (param $m2 v128) (param $m3 v128)
    (local $y i32) (local $row i32) (local $x i32) (local $b i32)
    (local $p i32) (local $wp i32) (local $wend i32) (local $step i32) (local $wrow i32)
    (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $s3 v128) (local $px v128) (local $w v128)
    (local $t v128) (local $u v128)
    (if (i32.or (i32.eqz (local.get $rows)) (i32.eqz (local.get $outW))) (then (return)))
    (local.set $step (i32.shl (local.get $ch) (i32.const 2)))
    (local.set $wrow (i32.shl (local.get $kstride) (i32.const 2)))
    (local.set $row (local.get $src))
    (loop $rows
      (local.set $x (i32.const 0))
      (local.set $b (local.get $bounds))
      (local.set $wp (local.get $weights))
      (loop $pixels
        (local.set $p
          (i32.add (local.get $row) (i32.mul (i32.load (local.get $b)) (local.get $ch))))
        (local.set $wend
          (i32.add (local.get $wp)
            (i32.and
              (i32.add (i32.shl (i32.load offset=4 (local.get $b)) (i32.const 2)) (i32.const 12))
              (i32.const -16))))
        (local.set $s0 (v128.const i64x2 0 0))
        (local.set $s1 (v128.const i64x2 0 0))
        (local.set $s2 (v128.const i64x2 0 0))
        (local.set $s3 (v128.const i64x2 0 0))
        (loop $taps
          (local.set $px (v128.load (local.get $p)))
          (local.set $w (v128.load (local.get $wp)))
          (local.set $s0
            (i32x4.add (local.get $s0) (i32x4.mul (i8x16.swizzle (local.get $px) (local.get $m0)) (local.get $w))))
          (local.set $s1
            (i32x4.add (local.get $s1) (i32x4.mul (i8x16.swizzle (local.get $px) (local.get $m1)) (local.get $w))))
          (local.set $s2
            (i32x4.add (local.get $s2) (i32x4.mul (i8x16.swizzle (local.get $px) (local.get $m2)) (local.get $w))))
          (local.set $s3
            (i32x4.add (local.get $s3) (i32x4.mul (i8x16.swizzle (local.get $px) (local.get $m3)) (local.get $w))))
          (local.set $p (i32.add (local.get $p) (local.get $step)))
          (local.set $wp (i32.add (local.get $wp) (i32.const 16)))
          (br_if $taps (i32.lt_u (local.get $wp) (local.get $wend))))
        (local.set $t
          (i32x4.add
            (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $s0) (local.get $s1))
            (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $s0) (local.get $s1))))
        (local.set $u
          (i32x4.add
            (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $s2) (local.get $s3))
            (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $s2) (local.get $s3))))
        (local.set $t
          (i32x4.add
            (i32x4.add
              (i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27 (local.get $t) (local.get $u))
              (i8x16.shuffle 4 5 6 7 12 13 14 15 20 21 22 23 28 29 30 31 (local.get $t) (local.get $u)))
            (v128.const i32x4 0x200000 0x200000 0x200000 0x200000)))
        (local.set $t (i32x4.shr_s (local.get $t) (i32.const 22)))
        (local.set $t (i16x8.narrow_i32x4_s (local.get $t) (local.get $t)))
        (local.set $t (i8x16.narrow_i16x8_u (local.get $t) (local.get $t)))
        (v128.store32_lane 0 (local.get $dst) (local.get $t))
        (local.set $dst (i32.add (local.get $dst) (local.get $bands)))
        (local.set $b (i32.add (local.get $b) (i32.const 8)))
        (local.set $wp
          (i32.add (local.get $weights)
            (i32.mul (local.tee $x (i32.add (local.get $x) (i32.const 1))) (local.get $wrow))))
        (br_if $pixels (i32.lt_u (local.get $x) (local.get $outW))))
      (local.set $row (i32.add (local.get $row) (local.get $stride)))
      (br_if $rows (i32.lt_u (local.tee $y (i32.add (local.get $y) (i32.const 1))) (local.get $rows)))))

  ;; Vertical pass. `bounds` holds (ymin, ymax) per output row as i32, the
  ;; weights of output row y start at `weights + 4 * y * ksize`; output row y
  ;; is the weighted sum of the ymax input rows from ymin on, and `src` holds
  ;; the input rows from `rowShift` on. Input and output rows are both
  ;; `stride` bytes. Sixteen bytes of a row at a time, widened into four
  ;; i32x4 sums; the last `stride % 16` bytes one by one.
  (func (export "vertical")
    (param $src i32) (param $stride i32) (param $outH i32) (param $bounds i32)
    (param $weights i32) (param $ksize i32) (param $rowShift i32) (param $dst i32)
    (local $y i32) (local $wrow i32) (local $wend i32) (local $base i32)
    (local $x i32) (local $xvec i32) (local $p i32) (local $wp i32) (local $s i32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $v v128) (local $lo v128) (local $hi v128) (local $w v128)
    (if (i32.or (i32.eqz (local.get $outH)) (i32.eqz (local.get $stride))) (then (return)))
    (local.set $xvec (i32.and (local.get $stride) (i32.const -16)))
    (loop $rows
      (local.set $base
        (i32.add (local.get $src)
          (i32.mul
            (i32.sub (i32.load (local.get $bounds)) (local.get $rowShift))
            (local.get $stride))))
      (local.set $wrow (i32.add (local.get $weights) (i32.shl (i32.mul (local.get $y) (local.get $ksize)) (i32.const 2))))
      (local.set $wend (i32.add (local.get $wrow) (i32.shl (i32.load offset=4 (local.get $bounds)) (i32.const 2))))
      (local.set $x (i32.const 0))
      (block $vecDone
        (br_if $vecDone (i32.ge_u (local.get $x) (local.get $xvec)))
        (loop $vec
          (local.set $a0 (v128.const i32x4 0x200000 0x200000 0x200000 0x200000))
          (local.set $a1 (local.get $a0))
          (local.set $a2 (local.get $a0))
          (local.set $a3 (local.get $a0))
          (local.set $p (i32.add (local.get $base) (local.get $x)))
          (local.set $wp (local.get $wrow))
          (loop $taps
            (local.set $w (i32x4.splat (i32.load (local.get $wp))))
            (local.set $v (v128.load (local.get $p)))
            (local.set $lo (i16x8.extend_low_i8x16_u (local.get $v)))
            (local.set $hi (i16x8.extend_high_i8x16_u (local.get $v)))
            (local.set $a0 (i32x4.add (local.get $a0) (i32x4.mul (i32x4.extend_low_i16x8_u (local.get $lo)) (local.get $w))))
            (local.set $a1 (i32x4.add (local.get $a1) (i32x4.mul (i32x4.extend_high_i16x8_u (local.get $lo)) (local.get $w))))
            (local.set $a2 (i32x4.add (local.get $a2) (i32x4.mul (i32x4.extend_low_i16x8_u (local.get $hi)) (local.get $w))))
            (local.set $a3 (i32x4.add (local.get $a3) (i32x4.mul (i32x4.extend_high_i16x8_u (local.get $hi)) (local.get $w))))
            (local.set $p (i32.add (local.get $p) (local.get $stride)))
            (br_if $taps (i32.lt_u (local.tee $wp (i32.add (local.get $wp) (i32.const 4))) (local.get $wend))))
          (v128.store
            (i32.add (local.get $dst) (local.get $x))
            (i8x16.narrow_i16x8_u
              (i16x8.narrow_i32x4_s
                (i32x4.shr_s (local.get $a0) (i32.const 22))
                (i32x4.shr_s (local.get $a1) (i32.const 22)))
              (i16x8.narrow_i32x4_s
                (i32x4.shr_s (local.get $a2) (i32.const 22))
                (i32x4.shr_s (local.get $a3) (i32.const 22)))))
          (br_if $vec (i32.lt_u (local.tee $x (i32.add (local.get $x) (i32.const 16))) (local.get $xvec)))))
      (block $tailDone
        (br_if $tailDone (i32.ge_u (local.get $x) (local.get $stride)))
        (loop $tail
          (local.set $s (i32.const 0x200000))
          (local.set $p (i32.add (local.get $base) (local.get $x)))
          (local.set $wp (local.get $wrow))
          (loop $taps
            (local.set $s
              (i32.add (local.get $s) (i32.mul (i32.load8_u (local.get $p)) (i32.load (local.get $wp)))))
            (local.set $p (i32.add (local.get $p) (local.get $stride)))
            (br_if $taps (i32.lt_u (local.tee $wp (i32.add (local.get $wp) (i32.const 4))) (local.get $wend))))
          (local.set $s (i32.shr_s (local.get $s) (i32.const 22)))
          (i32.store8
            (i32.add (local.get $dst) (local.get $x))
            (select
              (i32.const 0)
              (select (i32.const 255) (local.get $s) (i32.gt_s (local.get $s) (i32.const 255)))
              (i32.lt_s (local.get $s) (i32.const 0))))
          (br_if $tail (i32.lt_u (local.tee $x (i32.add (local.get $x) (i32.const 1))) (local.get $stride)))))
      (local.set $dst (i32.add (local.get $dst) (local.get $stride)))
      (local.set $bounds (i32.add (local.get $bounds) (i32.const 8)))
      (br_if $rows (i32.lt_u (local.tee $y (i32.add (local.get $y) (i32.const 1))) (local.get $outH)))))
)
