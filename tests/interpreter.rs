//! The reference interpreter (`qkc_dsl::interp::run`) against values worked out
//! independently of it:
//!
//! - small cases whose packed bytes are written by hand and whose outputs are
//!   computed by hand in the comments (q3p5 stream rows of 2 units of 7 bits that
//!   straddle a byte, odd K with a padded last unit, groups of 2 with f32 scales,
//!   explicit bit ranges with unsigned fields, s4 nibbles, i8 weights, f16 output);
//! - a property test against a naive loop written here, which packs and decodes
//!   the codes itself from the bit layout (it never calls `LayoutDesc::decode`),
//!   for s4 stream and q3p5 stream/byte, over random dims including 1×1×2 and
//!   3×17×33 and K not a multiple of the group: integer kernels are compared
//!   exactly (i32 output), float kernels within a stated tolerance;
//! - buffer errors (wrong length, wrong type, wrong count, bad dims) that must be
//!   reported as errors naming the tensor.

use half::{bf16, f16};
use proptest::prelude::*;
use qkc::dsl;
use qkc::dsl::host::{BufferError, HostBuf};
use qkc::dsl::interp;
use qkc::dsl::ir::{Dims, Kernel};

/// Compiles a one-kernel source.
fn kernel(src: &str) -> Kernel {
    match dsl::compile("test.qk", src) {
        Ok(p) => p.kernels.into_iter().next().expect("one kernel"),
        Err(d) => panic!("{}", d.render()),
    }
}

fn dims(k: &Kernel, m: u64, n: u64, kk: u64) -> Dims {
    let pairs = [
        ("M".to_string(), m),
        ("N".to_string(), n),
        ("K".to_string(), kk),
    ];
    k.dims_from_pairs(&pairs).expect("valid dims")
}

fn i32s(b: HostBuf) -> Vec<i32> {
    match b {
        HostBuf::I32(v) => v,
        other => panic!("expected an i32 output, got {}", other.type_name()),
    }
}

fn f32s(b: HostBuf) -> Vec<f32> {
    match b {
        HostBuf::F32(v) => v,
        other => panic!("expected an f32 output, got {}", other.type_name()),
    }
}

const INT_Q3P5: &str = "kernel t(x: i8[M, K], w: q3p5[N, K]) -> y: i32[M, N] {
    where K <= 4096;
    y[m, n] = sum(k) x[m, k] * w[n, k];
}";

// ---------------------------------------------------------------------------
// (a) Hand-computed cases.
// ---------------------------------------------------------------------------

/// q3p5 stream, K = 4: each row is 2 units of 7 bits = 14 bits = 2 bytes, and the
/// second unit straddles the byte boundary (its bit 0 is bit 7 of byte 0).
#[test]
fn q3p5_stream_two_units_by_hand() {
    let k = kernel(INT_Q3P5);
    // Row 0: weights [-8, 3, 5, -3].
    //   unit 0: hi = -8 -> 1000, lo = 3 -> 011   => 1000_011 = 0x43
    //   unit 1: hi =  5 -> 0101, lo = -3 -> 101  => 0101_101 = 0x2D
    //   bits 0..6 = unit 0, bits 7..13 = unit 1 (LSB first):
    //   byte 0 = 0x43 | (0x2D & 1) << 7 = 0xC3, byte 1 = 0x2D >> 1 = 0x16.
    // Row 1: weights [7, -4, -1, 0].
    //   unit 0: 0111_100 = 0x3C; unit 1: hi = -1 -> 1111, lo = 0 -> 000 => 0x78
    //   byte 0 = 0x3C | (0x78 & 1) << 7 = 0x3C, byte 1 = 0x78 >> 1 = 0x3C.
    let w = HostBuf::Packed(vec![0xC3, 0x16, 0x3C, 0x3C]);
    let x = HostBuf::I8(vec![1, 2, 3, 4, -128, 127, 5, -1]);
    // y[0,0] = -8 + 6 + 15 - 12              = 1
    // y[0,1] =  7 - 8 - 3 + 0                = -4
    // y[1,0] = 1024 + 381 + 25 + 3           = 1433
    // y[1,1] = -896 - 508 - 5 + 0            = -1409
    let y = i32s(interp::run(&k, &dims(&k, 2, 2, 4), &[x, w]).expect("runs"));
    assert_eq!(y, vec![1, -4, 1433, -1409]);
}

/// K = 3 is odd: the last unit holds one weight and its `lo` field is padding,
/// which must never be read (here it is deliberately non-zero).
#[test]
fn q3p5_odd_k_ignores_padding() {
    let k = kernel(INT_Q3P5);
    // Weights [2, -1, -5]:
    //   unit 0: hi = 2 -> 0010, lo = -1 -> 111 => 0010_111 = 0x17
    //   unit 1: hi = -5 -> 1011, lo = padding 111 => 1011_111 = 0x5F
    //   byte 0 = 0x17 | (0x5F & 1) << 7 = 0x97, byte 1 = 0x5F >> 1 = 0x2F.
    let w = HostBuf::Packed(vec![0x97, 0x2F]);
    let x = HostBuf::I8(vec![10, 20, 30]);
    // y = 2*10 - 1*20 - 5*30 = -150: the padding field is never read.
    let y = i32s(interp::run(&k, &dims(&k, 1, 1, 3), &[x, w]).expect("runs"));
    assert_eq!(y, vec![-150]);
    // The same row with zero padding gives the same result.
    let w0 = HostBuf::Packed(vec![0x17, 0x2C]);
    let x = HostBuf::I8(vec![10, 20, 30]);
    let y0 = i32s(interp::run(&k, &dims(&k, 1, 1, 3), &[x, w0]).expect("runs"));
    assert_eq!(y0, vec![-150]);
}

/// Groups of 2 along K with f32 weight scales, an f32 row scale, and K = 5
/// (3 groups, the last one holding a single weight).
#[test]
fn q3p5_groups_of_two_with_f32_scales_by_hand() {
    let k = kernel(
        "kernel g(x: i8[M, K], w: q3p5[N, K], ws: f32[N, K / 2], xs: f32[M]) -> y: f32[M, N] {
            y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 2] * xs[m];
        }",
    );
    // Weights [1, 2, -3, 3, 6]:
    //   unit 0: 0001_010 = 10, unit 1: 1101_011 = 107, unit 2: 0110_000 = 48
    //   row bits = 10 + 107 << 7 + 48 << 14 = 800138 = 0x0C358A, 21 bits -> 3 bytes.
    let w = HostBuf::Packed(vec![0x8A, 0x35, 0x0C]);
    let x = HostBuf::I8(vec![3, -1, 2, 4, -2]);
    let ws = HostBuf::F32(vec![0.5, 0.25, 2.0]);
    let xs = HostBuf::F32(vec![0.125]);
    // group 0: 3*1 - 1*2 = 1;  group 1: 2*-3 + 4*3 = 6;  group 2: -2*6 = -12
    // y = (0.5*1 + 0.25*6 + 2*-12) * 0.125 = -22 * 0.125 = -2.75
    let y = f32s(interp::run(&k, &dims(&k, 1, 1, 5), &[x, w, ws, xs]).expect("runs"));
    assert_eq!(y, vec![-2.75]);
}

/// Explicit bit ranges with field 0 in the low bits, an unsigned field, and byte
/// storage (a 5-bit unit per byte).
#[test]
fn explicit_bits_unsigned_field_byte_storage_by_hand() {
    let k = kernel(
        "layout lohi = { a: u2 @ 1..0, b: s3 @ 4..2 } byte;
         kernel t(x: i8[M, K], w: lohi[N, K]) -> y: i32[M, N] {
            where K <= 1024;
            y[m, n] = sum(k) x[m, k] * w[n, k];
         }",
    );
    // Weights [3, -4, 1, 2]: unit 0: b = -4 -> 100, a = 3 -> 11 => 100_11 = 19;
    //                        unit 1: b =  2 -> 010, a = 1 -> 01 => 010_01 = 9.
    let w = HostBuf::Packed(vec![19, 9]);
    let x = HostBuf::I8(vec![5, 6, 7, 8]);
    // y = 15 - 24 + 7 + 16 = 14
    let y = i32s(interp::run(&k, &dims(&k, 1, 1, 4), &[x, w]).expect("runs"));
    assert_eq!(y, vec![14]);
}

/// s4 stream: two codes per byte, the even k in the low nibble; f32 activations
/// and an f16 output.
#[test]
fn s4_nibbles_f32_activations_f16_output_by_hand() {
    let k = kernel(
        "kernel t(x: f32[M, K], w: s4[N, K]) -> y: f16[M, N] {
            y[m, n] = sum(k) x[m, k] * w[n, k];
        }",
    );
    // Weights [-8, 7, 1]: byte 0 = 0111_1000 = 0x78 (k=1 high, k=0 low), byte 1 = 0x01.
    let w = HostBuf::Packed(vec![0x78, 0x01]);
    let x = HostBuf::F32(vec![0.5, 0.25, -2.0]);
    // y = -4 + 1.75 - 2 = -4.25 (exact in f16)
    let y = interp::run(&k, &dims(&k, 1, 1, 3), &[x, w]).expect("runs");
    assert_eq!(y, HostBuf::F16(vec![f16::from_f32(-4.25)]));
}

/// Plain i8 weights (one byte per weight, two's complement) and a bf16 column scale.
#[test]
fn i8_weights_with_column_scale_by_hand() {
    let k = kernel(
        "kernel t(x: i8[M, K], w: i8[N, K], s: bf16[N]) -> y: f32[M, N] {
            y[m, n] = sum(k) x[m, k] * w[n, k] * s[n];
        }",
    );
    let w = HostBuf::I8(vec![-128, 127, 1, -3]); // rows [-128, 127], [1, -3]
    let x = HostBuf::I8(vec![-1, -1]);
    let s = HostBuf::BF16(vec![bf16::from_f32(0.5), bf16::from_f32(-4.0)]);
    // y[0,0] = (128 - 127) * 0.5 = 0.5;  y[0,1] = (-1 + 3) * -4 = -8
    let y = f32s(interp::run(&k, &dims(&k, 1, 2, 2), &[x, w, s]).expect("runs"));
    assert_eq!(y, vec![0.5, -8.0]);
}

/// Full-range codes at the i32 proof's edge: K = 3 of i8 × q3p5 extremes.
#[test]
fn extreme_codes_by_hand() {
    let k = kernel(INT_Q3P5);
    // Weights [-8, -4, -8]: unit 0 = 1000_100 = 0x44, unit 1 = 1000_000 = 0x40.
    //   byte 0 = 0x44 | (0x40 & 1) << 7 = 0x44, byte 1 = 0x40 >> 1 = 0x20.
    let w = HostBuf::Packed(vec![0x44, 0x20]);
    let x = HostBuf::I8(vec![-128, -128, -128]);
    // y = 1024 + 512 + 1024 = 2560
    let y = i32s(interp::run(&k, &dims(&k, 1, 1, 3), &[x, w]).expect("runs"));
    assert_eq!(y, vec![2560]);
}

// ---------------------------------------------------------------------------
// (b) Property test against a naive loop with its own bit decoding.
// ---------------------------------------------------------------------------

/// The weight layouts exercised, with the test's own packing and decoding.
#[derive(Clone, Copy, Debug)]
enum Lay {
    /// `s4` (built in): 4-bit codes, two per byte, the even k in the low nibble.
    S4Stream,
    /// `q3p5`: 7-bit units {hi: s4 @ 6..3, lo: s3 @ 2..0} back to back, LSB first.
    Q3p5Stream,
    /// `q3p5b`: the same units, one per byte.
    Q3p5Byte,
}

impl Lay {
    fn name(self) -> &'static str {
        match self {
            Lay::S4Stream => "s4",
            Lay::Q3p5Stream => "q3p5",
            Lay::Q3p5Byte => "q3p5b",
        }
    }

    /// Range of the code at position `k`.
    fn range(self, k: usize) -> (i32, i32) {
        match self {
            Lay::S4Stream => (-8, 7),
            _ if k & 1 == 0 => (-8, 7),
            _ => (-4, 3),
        }
    }

    fn row_bytes(self, k: usize) -> usize {
        match self {
            Lay::S4Stream => k.div_ceil(2),
            Lay::Q3p5Stream => (k.div_ceil(2) * 7).div_ceil(8),
            Lay::Q3p5Byte => k.div_ceil(2),
        }
    }

    /// Packs one row of codes (padding fields are 0).
    fn pack_row(self, codes: &[i32]) -> Vec<u8> {
        let mut row = vec![0u8; self.row_bytes(codes.len())];
        match self {
            Lay::S4Stream => {
                for (k, &c) in codes.iter().enumerate() {
                    row[k / 2] |= ((c as u8) & 0xF) << (4 * (k % 2));
                }
            }
            Lay::Q3p5Stream | Lay::Q3p5Byte => {
                for (j, pair) in codes.chunks(2).enumerate() {
                    let hi = (pair[0] as u32) & 0xF;
                    let lo = pair.get(1).map(|&c| (c as u32) & 0x7).unwrap_or(0);
                    let unit = (hi << 3) | lo;
                    if let Lay::Q3p5Byte = self {
                        row[j] = unit as u8;
                    } else {
                        for b in 0..7 {
                            if (unit >> b) & 1 == 1 {
                                let bit = 7 * j + b;
                                row[bit / 8] |= 1 << (bit % 8);
                            }
                        }
                    }
                }
            }
        }
        row
    }

    /// Decodes code `k` of a packed row, bit by bit.
    fn decode(self, row: &[u8], k: usize) -> i32 {
        let bit = |i: usize| ((row[i / 8] >> (i % 8)) & 1) as u32;
        let sext = |v: u32, w: u32| {
            if v >> (w - 1) == 1 {
                v as i32 - (1 << w)
            } else {
                v as i32
            }
        };
        match self {
            Lay::S4Stream => {
                let v = (0..4).map(|b| bit(4 * k + b) << b).sum();
                sext(v, 4)
            }
            Lay::Q3p5Stream | Lay::Q3p5Byte => {
                let base = match self {
                    Lay::Q3p5Stream => 7 * (k / 2),
                    _ => 8 * (k / 2),
                };
                let unit: u32 = (0..7).map(|b| bit(base + b) << b).sum();
                if k & 1 == 0 {
                    sext(unit >> 3, 4)
                } else {
                    sext(unit & 7, 3)
                }
            }
        }
    }
}

/// Draws a value uniformly in `lo..=hi` from a raw random word.
fn pick(raw: u32, (lo, hi): (i32, i32)) -> i32 {
    lo + (raw % (hi - lo + 1) as u32) as i32
}

/// Dims: the two named corner cases, or random ones.
fn dims_strategy() -> impl Strategy<Value = (usize, usize, usize)> {
    prop_oneof![
        Just((1usize, 1usize, 2usize)),
        Just((3, 17, 33)),
        (1usize..=3, 1usize..=17, 1usize..=40),
    ]
}

fn lay_strategy() -> impl Strategy<Value = Lay> {
    prop_oneof![
        Just(Lay::S4Stream),
        Just(Lay::Q3p5Stream),
        Just(Lay::Q3p5Byte)
    ]
}

/// Random codes and the packed weight buffer, checked against the test's decoder.
fn make_weights(lay: Lay, n: usize, k: usize, raw: &[u32]) -> (Vec<i32>, Vec<u8>) {
    let codes: Vec<i32> = (0..n * k).map(|i| pick(raw[i], lay.range(i % k))).collect();
    let mut packed = Vec::new();
    for r in 0..n {
        packed.extend(lay.pack_row(&codes[r * k..(r + 1) * k]));
    }
    let rb = lay.row_bytes(k);
    for r in 0..n {
        for kk in 0..k {
            assert_eq!(
                lay.decode(&packed[r * rb..(r + 1) * rb], kk),
                codes[r * k + kk]
            );
        }
    }
    (codes, packed)
}

/// Naive reference: y[m, n] = rs[m] * Σ_g gs[n, g] * Σ_{k in g} a[m, k] * code(n, k),
/// in f64, with the codes decoded from the packed bytes.
#[allow(clippy::too_many_arguments)]
fn naive(
    lay: Lay,
    (m, n, k): (usize, usize, usize),
    a: &[f64],
    packed: &[u8],
    g: usize,
    gs: &[f64],
    rs: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let rb = lay.row_bytes(k);
    let groups = k.div_ceil(g);
    let mut out = vec![0f64; m * n];
    let mut mag = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let row = &packed[j * rb..(j + 1) * rb];
            let (mut total, mut abs) = (0f64, 0f64);
            for gi in 0..groups {
                let mut part = 0f64;
                for kk in gi * g..((gi + 1) * g).min(k) {
                    let t = a[i * k + kk] * lay.decode(row, kk) as f64;
                    part += t;
                    abs += (t * gs[j * groups + gi] * rs[i]).abs();
                }
                total += gs[j * groups + gi] * part;
            }
            out[i * n + j] = total * rs[i];
            mag[i * n + j] = abs;
        }
    }
    (out, mag)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// i8 × packed codes with an i32 output: exact equality.
    #[test]
    fn integer_kernels_match_naive_loop_exactly(
        lay in lay_strategy(),
        (m, n, k) in dims_strategy(),
        raw in prop::collection::vec(any::<u32>(), 3 * 17 * 40 * 2),
    ) {
        let (codes, packed) = make_weights(lay, n, k, &raw);
        let x: Vec<i8> = (0..m * k).map(|i| pick(raw[n * k + i], (-128, 127)) as i8).collect();
        prop_assume!(x.iter().any(|&v| v != 0) && codes.iter().any(|&c| c != 0));
        let src = format!(
            "kernel t(x: i8[M, K], w: {}[N, K]) -> y: i32[M, N] {{
                where K <= 65536;
                y[m, n] = sum(k) x[m, k] * w[n, k];
            }}",
            lay.name()
        );
        let kern = kernel(&src);
        let a: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let (want, _) = naive(lay, (m, n, k), &a, &packed, k, &vec![1.0; n], &vec![1.0; m]);
        let got = i32s(interp::run(&kern, &dims(&kern, m as u64, n as u64, k as u64),
            &[HostBuf::I8(x), HostBuf::Packed(packed)]).expect("runs"));
        let want: Vec<i32> = want.iter().map(|&v| v as i32).collect();
        prop_assert_eq!(got, want);
    }

    /// i8 activations, packed weights, f32 group scales along K (K is usually not a
    /// multiple of the group) and f32 row scales; f32 output.
    ///
    /// Tolerance: the interpreter rounds once to f32, so
    /// |got − want| ≤ 2⁻²⁴·|want| + 1e-12·Σ|terms| (the second part covers f64
    /// summation order).
    #[test]
    fn grouped_float_kernels_match_naive_loop(
        lay in lay_strategy(),
        (m, n, k) in dims_strategy(),
        gsel in 0usize..4,
        raw in prop::collection::vec(any::<u32>(), 3 * 17 * 40 * 2 + 64),
    ) {
        let g = [2usize, 4, 6, 16][gsel];
        let groups = k.div_ceil(g);
        let (codes, packed) = make_weights(lay, n, k, &raw);
        let mut r = raw[n * k..].iter().copied();
        let x: Vec<i8> = (0..m * k).map(|_| pick(r.next().unwrap_or(7), (-128, 127)) as i8).collect();
        prop_assume!(x.iter().any(|&v| v != 0) && codes.iter().any(|&c| c != 0));
        // Scales in [-2, 2), never zero, exactly representable in f32.
        let mut scale = |_| {
            let v = (pick(r.next().unwrap_or(3), (-1024, 1023)) as f32) / 512.0;
            if v == 0.0 { 0.75 } else { v }
        };
        let ws: Vec<f32> = (0..n * groups).map(&mut scale).collect();
        let xs: Vec<f32> = (0..m).map(&mut scale).collect();
        let src = format!(
            "kernel t(x: i8[M, K], xs: f32[M], w: {}[N, K], ws: f32[N, K / {g}]) -> y: f32[M, N] {{
                y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / {g}] * xs[m];
            }}",
            lay.name()
        );
        let kern = kernel(&src);
        let a: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let gs: Vec<f64> = ws.iter().map(|&v| v as f64).collect();
        let rs: Vec<f64> = xs.iter().map(|&v| v as f64).collect();
        let (want, mag) = naive(lay, (m, n, k), &a, &packed, g, &gs, &rs);
        let got = f32s(interp::run(&kern, &dims(&kern, m as u64, n as u64, k as u64),
            &[HostBuf::I8(x), HostBuf::F32(xs), HostBuf::Packed(packed), HostBuf::F32(ws)]).expect("runs"));
        for (i, (&g_, &w_)) in got.iter().zip(&want).enumerate() {
            let tol = w_.abs() * 2f64.powi(-24) + 1e-12 * mag[i];
            prop_assert!((g_ as f64 - w_).abs() <= tol, "y[{}] = {} but the naive loop gives {} (tol {})", i, g_, w_, tol);
        }
    }

    /// f16 activations, bf16 group scales of 4 (float accumulation); f32 output.
    /// Same tolerance as above.
    #[test]
    fn f16_activation_kernels_match_naive_loop(
        lay in lay_strategy(),
        (m, n, k) in dims_strategy(),
        raw in prop::collection::vec(any::<u32>(), 3 * 17 * 40 * 2 + 64),
    ) {
        let g = 4usize;
        let groups = k.div_ceil(g);
        let (codes, packed) = make_weights(lay, n, k, &raw);
        let mut r = raw[n * k..].iter().copied();
        let x: Vec<f16> = (0..m * k)
            .map(|_| f16::from_f32(pick(r.next().unwrap_or(5), (-2048, 2047)) as f32 / 1024.0))
            .collect();
        prop_assume!(x.iter().any(|v| v.to_f32() != 0.0) && codes.iter().any(|&c| c != 0));
        let ws: Vec<bf16> = (0..n * groups)
            .map(|_| bf16::from_f32(pick(r.next().unwrap_or(9), (1, 255)) as f32 / 64.0))
            .collect();
        let src = format!(
            "kernel t(x: f16[M, K], w: {}[N, K], ws: bf16[N, K / 4]) -> y: f32[M, N] {{
                y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 4];
            }}",
            lay.name()
        );
        let kern = kernel(&src);
        let a: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
        let gs: Vec<f64> = ws.iter().map(|v| v.to_f64()).collect();
        let (want, mag) = naive(lay, (m, n, k), &a, &packed, g, &gs, &vec![1.0; m]);
        let got = f32s(interp::run(&kern, &dims(&kern, m as u64, n as u64, k as u64),
            &[HostBuf::F16(x), HostBuf::Packed(packed), HostBuf::BF16(ws)]).expect("runs"));
        for (i, (&g_, &w_)) in got.iter().zip(&want).enumerate() {
            let tol = w_.abs() * 2f64.powi(-24) + 1e-12 * mag[i];
            prop_assert!((g_ as f64 - w_).abs() <= tol, "y[{}] = {} but the naive loop gives {} (tol {})", i, g_, w_, tol);
        }
    }
}

/// The test's own packer agrees byte for byte with the crate's packer (so both
/// sides above talk about the same bits).
#[test]
fn test_packer_agrees_with_the_crate_packer() {
    for (lay, desc) in [
        (Lay::S4Stream, dsl::layout::builtin("s4")),
        (Lay::Q3p5Stream, dsl::layout::builtin("q3p5")),
        (Lay::Q3p5Byte, dsl::layout::builtin("q3p5b")),
    ] {
        let desc = desc.expect("built-in layout");
        for k in [1usize, 2, 3, 7, 8, 33] {
            let raw: Vec<u32> = (0..3 * k as u32)
                .map(|i| i.wrapping_mul(2_654_435_761))
                .collect();
            let (codes, packed) = make_weights(lay, 3, k, &raw);
            assert_eq!(
                desc.pack(&codes, 3, k).expect("in range"),
                packed,
                "{lay:?} K={k}"
            );
            assert_eq!(desc.row_bytes(k), lay.row_bytes(k));
        }
    }
}

// ---------------------------------------------------------------------------
// (c) Buffer errors name the tensor.
// ---------------------------------------------------------------------------

fn flagship() -> Kernel {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/kernels/gemv_w3p5.qk"
    ))
    .expect("example");
    match dsl::compile("gemv_w3p5.qk", &src) {
        Ok(p) => p.kernels[0].clone(),
        Err(d) => panic!("{}", d.render()),
    }
}

/// Valid inputs for gemv_w3p5 at M=2, N=3, K=200 (x, xs, w, ws).
fn flagship_inputs() -> (Kernel, Dims, Vec<HostBuf>) {
    let k = flagship();
    let d = dims(&k, 2, 3, 200);
    let x = HostBuf::I8((0..400).map(|i| (i % 251) as i8).collect());
    let xs = HostBuf::F32(vec![0.5, 0.25]);
    // 100 units of 7 bits = 700 bits = 88 bytes per row.
    let w = HostBuf::Packed((0..3 * 88).map(|i| (i * 37 % 256) as u8).collect());
    let ws = HostBuf::F16(vec![f16::from_f32(0.125); 3 * 2]);
    (k, d, vec![x, xs, w, ws])
}

#[test]
fn valid_flagship_inputs_run() {
    let (k, d, inputs) = flagship_inputs();
    let y = f32s(interp::run(&k, &d, &inputs).expect("valid inputs"));
    assert_eq!(y.len(), 6);
    assert!(y.iter().any(|&v| v != 0.0));
}

#[test]
fn wrong_packed_length_names_the_weight() {
    let (k, d, mut inputs) = flagship_inputs();
    inputs[2] = HostBuf::Packed(vec![1; 3 * 88 - 1]);
    let e = interp::run(&k, &d, &inputs).expect_err("one byte short");
    assert!(
        matches!(&e, BufferError::Length { name, expected: 264, got: 263, .. } if name == "w"),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("`w`") && msg.contains("264") && msg.contains("263"),
        "{msg}"
    );
}

#[test]
fn wrong_activation_length_names_the_activation() {
    let (k, d, mut inputs) = flagship_inputs();
    inputs[0] = HostBuf::I8(vec![1; 401]);
    let e = interp::run(&k, &d, &inputs).expect_err("one element too many");
    assert!(
        matches!(&e, BufferError::Length { name, .. } if name == "x"),
        "{e:?}"
    );
    assert!(e.to_string().contains("`x`"));
}

#[test]
fn wrong_group_scale_length_names_the_scale() {
    let (k, d, mut inputs) = flagship_inputs();
    // K = 200 in groups of 128 is 2 groups per row (ceiling), not 1.
    inputs[3] = HostBuf::F16(vec![f16::ONE; 3]);
    let e = interp::run(&k, &d, &inputs).expect_err("floor instead of ceiling");
    assert!(
        matches!(&e, BufferError::Length { name, expected: 6, got: 3, .. } if name == "ws"),
        "{e:?}"
    );
    assert!(e.to_string().contains("`ws`"));
}

#[test]
fn wrong_type_names_the_tensor() {
    let (k, d, mut inputs) = flagship_inputs();
    inputs[3] = HostBuf::F32(vec![0.125; 6]); // ws is f16
    let e = interp::run(&k, &d, &inputs).expect_err("f32 for f16");
    assert!(
        matches!(&e, BufferError::Type { name, .. } if name == "ws"),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("`ws`") && msg.contains("f16") && msg.contains("f32"),
        "{msg}"
    );

    let (k, d, mut inputs) = flagship_inputs();
    inputs[2] = HostBuf::I8(vec![1; 264]); // w is packed
    let e = interp::run(&k, &d, &inputs).expect_err("i8 for packed");
    assert!(
        matches!(&e, BufferError::Type { name, .. } if name == "w"),
        "{e:?}"
    );
    assert!(e.to_string().contains("`w`"));
}

#[test]
fn wrong_count_is_an_error() {
    let (k, d, mut inputs) = flagship_inputs();
    inputs.pop();
    let e = interp::run(&k, &d, &inputs).expect_err("three buffers for four parameters");
    assert!(
        matches!(
            &e,
            BufferError::Count {
                expected: 4,
                got: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("gemv_w3p5"));

    let (k, d, mut inputs) = flagship_inputs();
    inputs.push(HostBuf::F32(vec![1.0]));
    assert!(matches!(
        interp::run(&k, &d, &inputs),
        Err(BufferError::Count {
            expected: 4,
            got: 5,
            ..
        })
    ));
}

#[test]
fn bad_dims_are_errors_naming_the_dimension() {
    let (k, _, inputs) = flagship_inputs();
    // M is bounded by `where M <= 8`.
    let e = k
        .dims_from_pairs(&[("M".into(), 9), ("N".into(), 3), ("K".into(), 200)])
        .expect_err("M = 9 exceeds its bound");
    assert!(e.contains('M') && e.contains('8'), "{e}");
    let zero = Dims {
        values: k
            .dims
            .iter()
            .map(|d| if d.name == "K" { 0 } else { 1 })
            .collect(),
    };
    let e = interp::run(&k, &zero, &inputs).expect_err("K = 0");
    assert!(
        matches!(&e, BufferError::Dims(s) if s.contains('K')),
        "{e:?}"
    );
}
