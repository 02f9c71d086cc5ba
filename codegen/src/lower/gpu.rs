//! The GPU schedules (CUDA-style SIMT: blocks of warps of 32 lanes).
//!
//! One [`Func`] holds every path; the choice between them is made by uniform
//! branches on the run-time dimensions, so all lanes of a warp always agree. The
//! runtime compiles one function per M bucket ([`GpuOptions::max_m`]) so that the
//! registers of the 8-row tile do not limit the occupancy of M = 1.
//!
//! **GEMV** (M ≤ 8 at run time; variants for M tiles of 1, 2, 4, 8 activation rows,
//! each with the rows clamped to `M - 1` and stores guarded by `m < M`):
//!
//! ```text
//! warp w of block b owns weight row n = b * warps_per_block + w   (guard n < N, uniform)
//! if row_bytes % 16 == 0 && activation row bytes % 16 == 0:        (uniform)
//!   // lane chunks of CW weights (CB bytes); lane l takes chunks l, l+32, l+64, …
//!   // so a warp's loads of weights and activations are contiguous (coalesced)
//!   for each iteration of U chunks per lane:          // all loads issued first
//!     W = the chunk's words: 16-byte vectors, aligned 8/4-byte words, or (7-bit
//!         stream) the aligned words around it and a funnel shift; sign bits XOR-ed
//!     for each group step inside the chunk:           // CW a multiple of G or G of CW
//!       for each quad of weights (i8 activations):
//!         p = 4 codes in byte lanes                   // constant shift + mask per code
//!         acc[i] = dp4a(x[row i] as one 32-bit word, p, acc[i])
//!         (1–2 rows: minus dp4a(x, bias word); else in-byte sign extension)
//!       (float activations: acc[i] += x * f32(code), codes by constant bit-field extracts)
//!       total[i] += f32(acc[i]) * group scales        // scale hoisting
//!   then one chunk per lane for the remaining whole chunks
//! for g in groups from the first weight left:         // scalar path: tails, unaligned rows
//!   for k in lane + its part of g step 32: generic unpack, acc[i] += x * code
//!   total[i] += acc[i] * group scales
//! total[i] = warp_sum(total[i]); lane 0 stores total[i] * row/col scales if m < M
//! ```
//!
//! **Generic** (M > 8, when the kernel allows it): one thread per weight row `n` and
//! tile of `tile_m` activation rows, the CPU schedule's loop nest inside
//! (constant-position unpack of whole chunks, generic tail).

use qkc_dsl::ir::{Accum, Kernel};
use qkc_dsl::layout::{FieldDesc, LayoutDesc};

use super::float_decode::{biased as magic_biased, code as magic_code, magic_field, window};
use super::scales::{group_scale, outer_scale};
use super::spread::SpreadPlan;
use super::unpack::{chunk_for, decode_chunk, decode_one, row_bytes, unit_stride_bits};
use super::{Plan, WeightLoads};
use crate::loop_ir::build::*;
use crate::loop_ir::{
    AsyncOp, BinOp, CmpOp, Elem, Expr, Func, Launch, LoopKind, Special, Stmt, Ty, Var,
};

/// Knobs of the GPU lowering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuOptions {
    /// Threads per block (a multiple of 32, at most 1024).
    pub block: u32,
    /// Use the warp-per-row GEMV schedule when M ≤ 8 at run time.
    pub gemv: bool,
    /// Activation-row tiles of the GEMV variants (each ≤ 8; the smallest tile ≥ M runs).
    pub m_tiles: Vec<u32>,
    /// Use the vector path (whole-word loads, constant-position unpack, `dp4a`) when
    /// rows are 16-byte aligned (off: scalar path only).
    pub vector: bool,
    /// Weights per lane chunk of the vector path (a multiple of 16 that holds whole
    /// bytes and units); `None` picks the smallest.
    pub chunk_weights: Option<u32>,
    /// Lane chunks in flight per lane and loop iteration for M = 1 (divided by the M
    /// tile for tiles of 1-2 rows, by half the tile for larger ones; at least 1).
    pub unroll: u32,
    /// Activation rows per thread in the generic (M > 8) schedule.
    pub tile_m: u32,
    /// A tighter bound on M than the kernel declares, promised by the caller (the
    /// runtime compiles one function per M bucket so that the registers of the M = 8
    /// path do not limit the occupancy of M = 1).
    pub max_m: Option<u64>,
    /// For M tiles of 4 or more rows, cover the vector path's remaining whole chunks
    /// with one more iteration of the tile's chunks per lane (indices clamped to the
    /// last chunk, contributions past it zeroed: one round of loads in flight) instead
    /// of a loop of one chunk per lane (one serialized load latency per chunk).
    pub masked_tail: bool,
    /// Weight rows per warp in the GEMV schedule: the warp loads each activation
    /// chunk once for all of them (`None`: for integer activations 2 when the
    /// function's largest M tile is at most 4 rows, else 1; for float activations 4,
    /// or without `float_magic` 8 (4 with 8-row tiles)). Measured on an H200,
    /// 3.5-bit, K×N 8192×28672, M = 1: i8 37.7 µs with 2 rows per warp against 41.8
    /// with 1 and 42.8 with 4; f16 76 µs with 8 against 87 with 4 and 249 with 1.
    /// With the spread decode, functions for M = 1 only take 3 rows per warp (and
    /// 2 chunks in flight per lane): on two H200s 33.7 and 34.8 µs at 8192×28672
    /// against 36.7 and 41.1 with 2 rows and 4 chunks (28672×8192: 34.3, 40.5 against
    /// 35.0, 37.9). With `float_magic` (f16, lane chunks of 32 weights, 2 chunks in
    /// flight at M = 1) 4 rows measured 64.0 µs at 8192×28672 against 64.4 with 3
    /// and 66.8-70.7 with 6 (M = 4: 108.2 against 120.7 and 116.4).
    pub rows_per_warp: Option<u32>,
    /// How the vector path's lanes get their chunk words in full iterations
    /// ([`super::WeightLoads`]; PTX only: [`Self::portable`] loads directly for HIP and
    /// LLVM). `Direct`: each lane loads its own chunks' words, so a warp load
    /// instruction touches 32 chunks `bytes` apart. `Shared`: the warp's row spans as
    /// adjacent 16-byte vectors through registers into shared memory (on an H200,
    /// 3.5-bit i8, K×N 8192×28672, M = 1, 2 rows per warp: 44-50 µs against 37.6 µs
    /// direct). `Async` (the default): the same spans by `cp.async` copies into
    /// [`Self::copy_stages`] rotating buffers, later iterations' in flight while one is
    /// decoded, one chunk per lane and row per iteration; where lane chunks are whole
    /// words and the buffers fit 48 KiB (i8 at M = 1: 4 rows per warp), elsewhere direct.
    /// H200, 3.5-bit i8, M = 1, against direct with 3 rows: 8192×28672 34.2 vs 34.8 µs,
    /// 28672×8192 32.2 vs 41.4, 8192×8192 14.3 vs 16.5, 14336×4096 14.7 vs 14.7.
    pub weight_loads: WeightLoads,
    /// Buffers per warp of the vector path's asynchronous copies (`weight_loads`
    /// `Async`; at least 2): `copy_stages - 1` iterations' copies are in flight while
    /// one is decoded.
    pub copy_stages: u32,
    /// Decode integer-activation chunks of 5- to 8-bit units with the spread decode
    /// ([`super::spread`]) where it applies (off: one shift and mask per code).
    pub spread: bool,
    /// The spread decode in its add form (units 2 and 3 moved by a mask and a
    /// multiply-add, [`super::spread::SpreadPlan::with_add_form`]: one `lop3` fewer
    /// per window; the multiply-add wraps, so HIP's C++ takes the shift-or form:
    /// [`Self::without_ptx_only`]). H200, 3.5-bit i8, M = 1, µs, shift-or / add form
    /// (`docs/bench/gpu_i8_spread_add.txt`): 8192×28672 35.4, 34.5 / 34.3, 34.3;
    /// 28672×8192 32.6, 32.5 / 32.6, 32.3.
    pub spread_add: bool,
    /// Software-pipeline the vector path's full iterations: the next iteration's
    /// weight words are loaded before this iteration's arithmetic (twice the weight
    /// registers; only with direct weight loads). Off by default: on an H200 (3.5-bit i8,
    /// M = 1, K×N 8192×28672 and 28672×8192) it measured 34.6-43 µs against 33.7-35.5
    /// without, at unroll 1-4 and 2-3 rows per warp.
    pub prefetch: bool,
    /// Decode float-activation chunks with exponent magic ([`super::float_decode`]:
    /// a mask, an XOR and a float subtraction per weight, each window shared by a
    /// unit's fields, activations loaded once per step for every weight row) instead
    /// of `bfe` and an integer-to-float conversion per weight (off: that path).
    pub float_magic: bool,
    /// With `float_magic`, in 1-row M tiles: multiply the activations by the biased
    /// codes (the float read from the masked bits, `2^E + u`) and subtract the step's
    /// sum of activation times bias once for all of a warp's weight rows, instead of
    /// subtracting the bias from every code (one float subtraction per weight fewer).
    /// The products and sums are of values up to `2^E + 2^b` instead of the codes, so
    /// the f32 rounding is that much coarser relative to the result (within the
    /// tolerance of `tests/gpu_common`). On by default: on an H200 (3.5-bit f16, M = 1)
    /// 51.6 against 56.4 us at 8192 x 28672 and 51.1 against 56.2 at 28672 x 8192; at
    /// M = 2 it was slower on two of five shapes (80.1 against 76.5 at 28672 x 8192),
    /// hence 1-row tiles only (`docs/bench/gpu_f16_fold.txt`).
    pub float_fold: bool,
    /// Run f16-activation GEMVs (M ≤ 8, K a multiple of 128) on the tensor cores
    /// ([`super::mma`]: `mma.sync` m16n8k16, 16 weight rows per tile, codes decoded to
    /// f16 pairs exactly) where the layout allows and M ≥ [`Self::mma_min_m`]. PTX
    /// only (HIP and LLVM-NVPTX lower with it off). Measured on an H200 (3.5-bit, f16,
    /// 4 warps splitting K per tile, `docs/bench/gpu_f16_simt_vs_mma_split.txt`), us,
    /// mma against SIMT: M = 4: 86.7/108.4 (K x N 8192 x 28672), 82.0/114.1 (28672 x
    /// 8192); M = 8: 92.8/208.4, 87.1/213.9; M = 2: 78.5/80.7, 100.8/82.7; M = 1 (forced):
    /// 65.6-68.9/64.0, 64.7/64.2.
    pub mma: bool,
    /// With [`Self::mma`], also run i8-activation GEMVs on the tensor cores (`mma.sync`
    /// m16n8k32 s8 -> s32, the spread decode's byte-lane quads as `A`; layouts with a
    /// spread decode, group scales of a multiple of 128, f32 output). On by default
    /// (with cp.async loads and 2 warps per tile for integer kernels, see
    /// [`Self::for_kernel`]): on an H200 (3.5-bit i8, `docs/bench/gpu_i8_mma.txt`), us,
    /// SIMT / mma: M=4 8192 x 28672 65.2 / 45.6, 28672 x 8192 65.0 / 44.2, 8192 x 8192
    /// 23.9 / 20.3; M=8 146.4 / 51.9, 155.5 / 46.7; M=1 (forced) 34.4 / 49.9, 32.6 /
    /// 41.8, hence M >= 3 ([`Self::mma_min_m`]).
    pub mma_int: bool,
    /// Chunks of 128 weights per row loaded ahead per iteration of the mma path (4
    /// measured best of 1, 2, 4, 8 on an H200).
    pub mma_chunks: u32,
    /// How the mma path's lanes get their weights ([`WeightLoads`]): each its
    /// pieces' words directly (the default), or the warp's 16 rows as 16-byte vectors
    /// through shared memory (when rows are a multiple of 16 bytes), by loads and
    /// stores or by double-buffered `cp.async` copies. Register staging measured
    /// slower on an H200 (f16, M = 1, 4 chunks, before split K: 107 us against 84 at
    /// 8192 x 28672, 149 against 155 at 28672 x 8192).
    pub mma_loads: WeightLoads,
    /// Warps of a block that share each 16-row tile of the mma path, splitting its K
    /// chunks (a divisor of the block's warps; 1: a warp per tile). Their partial sums
    /// meet in shared memory after a block barrier.
    pub mma_split: u32,
    /// The i8 tensor-core path's spread decode in its add form (one `lop3` fewer per
    /// window, [`super::spread::SpreadPlan::with_add_form`]; the SIMT path always
    /// uses it). Off by default, on for long rows: on an H200 (3.5-bit i8, µs, off /
    /// on, one run, `docs/bench/gpu_i8_spread_add.txt`) 28672×8192 (long rows) M=3
    /// 42.4 / 40.1, M=4 44.5 / 41.2, M=8 46.8 / 44.0; 8192×28672 M=4 with 2 warps
    /// per tile 46.0 / 48.4 (1 warp: 47.2 / 46.3), M=3 45.7 / 48.1, M=8 47.4 / 49.6.
    pub mma_spread_add: bool,
    /// The smallest M that takes the mma path (a run-time test; functions whose
    /// `max_m` is below it have no mma path). 3: at M = 1 the SIMT GEMV is as fast and
    /// at M = 2 faster on some shapes (see [`Self::mma`]).
    pub mma_min_m: u32,
    /// For long rows (K ≥ 2N, known only at launch): the mma path's loads, smallest
    /// M and warps per tile when they differ from [`Self::mma_loads`],
    /// [`Self::mma_min_m`] and [`Self::mma_split`]. The lowering itself ignores this;
    /// the CUDA runtime compiles a second function for each M bucket from 2 up and
    /// launches it when K ≥ 2N. Default: `cp.async` loads from M = 2, 4 warps per tile.
    /// Measured on an H200 (3.5-bit f16, `docs/bench/gpu_f16_paths.txt`), us,
    /// default / this: 28672 x 8192 M=2 77.0 (SIMT) / 66.0, M=4 80.9 / 70.2, M=8 87.7 /
    /// 76.7; 14336 x 4096 M=2 24.0 / 22.4, M=4 25.2 / 23.5, M=8 27.1 / 25.4; on the
    /// shapes with K < 2N cp.async was slower or equal (8192 x 8192 M=4 29.3 / 28.4).
    /// i8 (`docs/bench/gpu_i8_mma.txt`): 28672 x 8192 M=2 55.7 (SIMT) / 42.0, M=4 4
    /// warps per tile 44.2 against 49.6 with 2 (14336 x 4096: 19.0 against 25.1).
    pub mma_long_rows: Option<LongRows>,
}

impl GpuOptions {
    /// Defaults for a kernel, honouring its schedule hints (`threads`, `tile_m`).
    /// Integer-activation kernels copy the mma path's weights by cp.async with 2 warps
    /// per tile (H200, 3.5-bit i8, M = 4, us: 8192 x 28672 45.6 against 50.6 with 4
    /// warps per tile and 60.2 loading directly; 8192 x 8192 20.3 against 19.5 and 21.2;
    /// long rows keep 4, see [`Self::mma_long_rows`]).
    pub fn for_kernel(k: &Kernel) -> GpuOptions {
        let block = k.schedule.threads.unwrap_or(128).clamp(32, 1024) / 32 * 32;
        let int = matches!(k.accum, Accum::Int { .. });
        GpuOptions {
            block,
            gemv: true,
            m_tiles: vec![1, 2, 4, 8],
            vector: true,
            chunk_weights: None,
            unroll: 4,
            tile_m: k.schedule.tile_m.unwrap_or(4).clamp(1, 8),
            max_m: None,
            masked_tail: true,
            rows_per_warp: None,
            weight_loads: WeightLoads::Async,
            copy_stages: 2,
            spread: true,
            spread_add: true,
            prefetch: false,
            float_magic: true,
            float_fold: true,
            mma: true,
            mma_int: true,
            mma_chunks: 4,
            mma_loads: if int {
                WeightLoads::Async
            } else {
                WeightLoads::Direct
            },
            mma_split: if int { 2 } else { 4 },
            mma_spread_add: false,
            mma_min_m: 3,
            mma_long_rows: Some(LongRows {
                loads: WeightLoads::Async,
                min_m: 2,
                split: 4,
                spread_add: true,
            }),
        }
    }

    /// [`Self::for_kernel`] for backends without the PTX-only lowerings (HIP, LLVM's
    /// AMDGPU and NVPTX targets): see [`Self::without_ptx_only`].
    pub fn portable(k: &Kernel) -> GpuOptions {
        GpuOptions::for_kernel(k).without_ptx_only()
    }

    /// These options with the PTX-only lowerings off: no tensor-core path (`mma.sync`),
    /// weights loaded directly (no shared-memory staging or `cp.async`), the spread
    /// decode without wrapping arithmetic (signed overflow is undefined in C++).
    pub fn without_ptx_only(self) -> GpuOptions {
        GpuOptions {
            mma: false,
            weight_loads: WeightLoads::Direct,
            spread_add: false,
            ..self
        }
    }
}

/// The mma path's options for long rows ([`GpuOptions::mma_long_rows`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongRows {
    pub loads: WeightLoads,
    pub min_m: u32,
    pub split: u32,
    pub spread_add: bool,
}

impl LongRows {
    /// `o` with these mma options.
    pub fn apply(self, o: &GpuOptions) -> GpuOptions {
        GpuOptions {
            mma_loads: self.loads,
            mma_min_m: self.min_m,
            mma_split: self.split,
            mma_spread_add: self.spread_add,
            ..o.clone()
        }
    }
}

/// The vector path's lane chunk: `weights` consecutive weights (a multiple of 16, one
/// 16-byte vector of i8 activations per 16) in `bytes` packed bytes; `sub` weights
/// share one group (a divisor of `weights`, or `weights`). Lane `l` of a warp takes
/// chunks `l, l + 32, l + 64, …` of its row, so the warp's loads of weights and
/// activations are contiguous (coalesced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneChunk {
    pub bytes: usize,
    pub weights: usize,
    pub sub: usize,
}

/// Whether every code fits a signed byte lane of `dp4a`.
fn fits_dp4a(l: &LayoutDesc) -> bool {
    l.fields().iter().all(|f| f.bits <= 7 || f.signed)
}

/// Picks the vector path's lane chunk for a plan: the one of `want` weights, else the
/// smallest valid one of at least `prefer` weights, else the smallest valid one; `None`
/// when none satisfies the layout and group constraints.
pub fn lane_chunk(p: &Plan, want: Option<u32>, prefer: usize) -> Option<LaneChunk> {
    let l = &p.layout;
    let ub = unit_stride_bits(l);
    let per = l.per_unit();
    if p.int && !fits_dp4a(l) {
        return None;
    }
    let fit = |cw: usize| -> Option<LaneChunk> {
        if !cw.is_multiple_of(per) || !(cw / per * ub).is_multiple_of(8) {
            return None;
        }
        let sub = match p.group {
            None => cw,
            Some(g) => {
                let g = g as usize;
                if g.is_multiple_of(cw) {
                    cw
                } else if cw.is_multiple_of(g) && g.is_multiple_of(4) {
                    g
                } else {
                    return None;
                }
            }
        };
        Some(LaneChunk {
            bytes: cw / per * ub / 8,
            weights: cw,
            sub,
        })
    };
    let mut sizes = (1..=16).map(|m| 16 * m);
    match want {
        Some(w) => sizes.filter(|&cw| cw == w as usize).find_map(fit),
        None => sizes
            .clone()
            .filter(|&cw| cw >= prefer)
            .find_map(fit)
            .or_else(|| sizes.find_map(fit)),
    }
}

/// Bit position (inside a chunk) and field of weight `j` of the chunk.
fn field_pos(l: &LayoutDesc, j: usize) -> (usize, FieldDesc) {
    let unit = j / l.per_unit();
    let fd = *l.field_of(j);
    (unit * unit_stride_bits(l) + fd.shift as usize, fd)
}

/// The 32 bits of the chunk starting at bit `32 * a + s` (`0 < s < 32`): a funnel
/// shift of words `a` and `a + 1`.
fn funnel(w: &[Var], a: usize, s: usize) -> Expr {
    bin(
        BinOp::Or,
        bin(BinOp::Shr, var(w[a]), i32c(s as i64)),
        bin(BinOp::Shl, var(w[a + 1]), i32c(32 - s as i64)),
    )
}

/// The code of chunk weight `j` as an `I32` (sign-extended when its field is signed).
fn code_expr(l: &LayoutDesc, w: &[Var], j: usize) -> Expr {
    let (pos, fd) = field_pos(l, j);
    let (a, o) = (pos / 32, pos % 32);
    if o + fd.bits as usize <= 32 {
        bfe(var(w[a]), o as u8, fd.bits, fd.signed)
    } else {
        bfe(funnel(w, a, o), 0, fd.bits, fd.signed)
    }
}

/// The raw bits of chunk weight `j` moved to bits `8 * lane ..` (other bits zero).
fn positioned(l: &LayoutDesc, w: &[Var], j: usize, lane: usize) -> Expr {
    let (pos, fd) = field_pos(l, j);
    let (a, o) = (pos / 32, pos % 32);
    let t = 8 * lane;
    let mask = ((((1u32 << fd.bits) - 1) << t) as i32) as i64;
    let src = if o + fd.bits as usize <= 32 {
        match o.cmp(&t) {
            std::cmp::Ordering::Equal => var(w[a]),
            std::cmp::Ordering::Greater => bin(BinOp::Shr, var(w[a]), i32c((o - t) as i64)),
            std::cmp::Ordering::Less => bin(BinOp::Shl, var(w[a]), i32c((t - o) as i64)),
        }
    } else {
        // A field crossing a word boundary is wider than the lane offset (o > t).
        funnel(w, a, o - t)
    };
    bin(BinOp::And, src, i32c(mask))
}

/// Sign-bit masks of the chunk's 32-bit words: bit `b` of word `a` is set when it is
/// the sign bit of a signed field narrower than 8 bits. XOR-ing a word with its mask
/// turns every such field `v` into `v ^ 2^(b-1)`, which [`packed_quad`] expects.
fn sign_masks(l: &LayoutDesc, weights: usize, words: usize) -> Vec<u32> {
    let mut m = vec![0u32; words];
    for j in 0..weights {
        let (pos, fd) = field_pos(l, j);
        if fd.signed && fd.bits < 8 {
            let b = pos + fd.bits as usize - 1;
            m[b / 32] |= 1 << (b % 32);
        }
    }
    m
}

/// Codes of chunk weights `4q .. 4q + 4` as four bytes (a `dp4a` operand), from words
/// already XOR-ed with [`sign_masks`], and the quad's bias word.
///
/// Fields are placed in their byte lanes with one shift and mask each. Signed fields
/// narrower than 8 bits are now `u = v ^ 2^(b-1) = code + 2^(b-1)` in `0..2^b`. With
/// `biased`, the bytes stay `u` and the caller subtracts `dp4a(x, bias word)` (one
/// `dp4a` per quad and activation row instead of two integer operations per quad:
/// cheaper for one or two rows); otherwise they are sign-extended in place:
/// `(u + (128 - 2^(b-1))) ^ 0x80` is `u - 2^(b-1)` as a byte (no carry crosses a byte).
fn packed_quad(l: &LayoutDesc, w: &[Var], q: usize, biased: bool) -> (Expr, u32) {
    let mut e: Option<Expr> = None;
    let (mut add_k, mut xor_k, mut bias) = (0u32, 0u32, 0u32);
    for lane in 0..4 {
        let j = 4 * q + lane;
        let fd = *l.field_of(j);
        let part = positioned(l, w, j, lane);
        e = Some(match e {
            None => part,
            Some(acc) => bin(BinOp::Or, acc, part),
        });
        if fd.signed && fd.bits < 8 {
            add_k |= (128 - (1u32 << (fd.bits - 1))) << (8 * lane);
            xor_k |= 0x80 << (8 * lane);
            bias |= (1u32 << (fd.bits - 1)) << (8 * lane);
        }
    }
    let e = e.unwrap_or(i32c(0));
    if xor_k == 0 {
        (e, 0)
    } else if biased {
        (e, bias)
    } else {
        let fixed = bin(
            BinOp::Xor,
            add(e, i32c(add_k as i32 as i64)),
            i32c(xor_k as i32 as i64),
        );
        (fixed, 0)
    }
}

/// Lowers a plan whose M dimension is at most `m_max` for GPU backends (PTX).
pub fn lower(p: &Plan, m_max: u64, o: &GpuOptions) -> Func {
    let block = o.block.clamp(32, 1024) / 32 * 32;
    let mut f = Func::new(
        p.name.clone(),
        p.bufs.clone(),
        p.dim_names.clone(),
        Launch::Gpu {
            grid: i64c(1),
            block,
        },
    );
    f.notes = p.notes.clone();
    let declared = m_max;
    let m_max = o.max_m.map_or(m_max, |b| b.clamp(1, m_max));
    if m_max < declared {
        f.notes.push(format!(
            "specialised for {} <= {m_max} (the launcher guarantees it)",
            p.dim_names[p.m]
        ));
    }
    let gemv = o.gemv;
    let generic = !gemv || m_max > 8;
    let wpb = (block / 32) as i64;
    let mut tiles: Vec<u32> = o
        .m_tiles
        .iter()
        .copied()
        .filter(|&t| (1..=8).contains(&t))
        .collect();
    tiles.sort_unstable();
    tiles.dedup();
    // Only tiles up to the first one covering min(M max, 8) are reachable.
    let cover = m_max.min(8) as u32;
    if let Some(pos) = tiles.iter().position(|&t| t >= cover) {
        tiles.truncate(pos + 1);
    } else {
        tiles.push(8);
    }
    // Measured on an H200 (3.5-bit, i8): chunks of 64 weights are fastest for one
    // activation row (fewer instructions per weight), 32 for tiles of 2..8 rows (fewer
    // registers and L1 wavefronts per activation row). Float activations loaded one
    // element at a time (no `float_magic`) make the lane stride set how many cache
    // lines each load instruction touches: the smallest chunk is best; with 16-byte
    // activation vectors (`float_magic`) 32 weights measured best (f16, M = 1, 4 rows
    // per warp: 64.0-64.2 µs against 71.7-75.2 with 16 and 67.1-75.2 with 64).
    let prefer = match (p.int, tiles == [1]) {
        // (8-row tiles keep 16: 32 spills on gfx90a.)
        (false, _) if o.float_magic && tiles.last().is_some_and(|&t| t <= 4) => 32,
        (false, _) => 16,
        (true, true) => 64,
        (true, false) => 32,
    };
    let chunk = if o.vector {
        lane_chunk(p, o.chunk_weights, prefer)
    } else {
        None
    };
    let (dm, dn) = (p.m, p.n);
    let mut body = Vec::new();
    let rpw = o
        .rows_per_warp
        .unwrap_or(match (p.int, tiles.last().copied().unwrap_or(8)) {
            // Weights copied by cp.async (whole-word chunks): 4 rows share each
            // activation load with no weight registers in flight.
            (true, 0..=1)
                if o.weight_loads == WeightLoads::Async
                    && chunk.is_some_and(|c| c.bytes.is_multiple_of(4)) =>
            {
                4
            }
            (true, 0..=1) => 3,
            (true, 2..=4) => 2,
            (true, _) => 1,
            (false, 0..=4) if !o.float_magic => 8,
            (false, _) => 4,
        })
        .clamp(1, 8) as usize;
    let mut gemv_grid = ceil_div(dim(dn), wpb * rpw as i64);
    let mut after_sync = Vec::new();
    let split = super::mma::split_of(o.mma_split, wpb);
    let mma_plan = if gemv && o.mma && (o.mma_int || !p.int) && m_max >= u64::from(o.mma_min_m) {
        super::mma::MmaPlan::new(p).map(|m| m.with_spread_add(o.mma_spread_add))
    } else {
        None
    };
    let generic_grid = ceil_div(
        mul(dim(dn), ceil_div(dim(dm), o.tile_m.max(1) as i64)),
        block as i64,
    );
    if gemv {
        f.notes.push(format!(
            "schedule gpu gemv (M <= 8): one warp per {} weight row(s), {} warps per block, M tiles {:?}, {}",
            rpw,
            wpb,
            tiles,
            match chunk {
                Some(c) => format!(
                    "vector path: lane chunks of {} weights in {} bytes, lanes interleaved (coalesced), unroll {} (chunks in flight per lane: fewer for larger M tiles and more rows per warp, one per iteration when weights are copied asynchronously), {} weights per group step, {}",
                    c.weights,
                    c.bytes,
                    o.unroll.max(1),
                    c.sub,
                    if p.int {
                        "dp4a on byte-lane codes"
                    } else if o.float_magic {
                        "f32 fma on exponent-magic codes"
                    } else {
                        "f32 fma"
                    }
                ),
                None => "no vector path (scalar unpack only)".into(),
            }
        ));
        let mut g = gemv_body(
            &mut f,
            p,
            wpb,
            rpw,
            &tiles,
            chunk,
            o.unroll.max(1) as usize,
            o.masked_tail,
            (o.weight_loads, o.copy_stages.max(2) as usize),
            o.spread.then_some(o.spread_add),
            o.prefetch,
            match (o.float_magic, o.float_fold) {
                (false, _) => Magic::Off,
                (true, false) => Magic::Subtract,
                (true, true) => Magic::Fold,
            },
        );
        if let Some(mp) = &mma_plan {
            let (loads, chunks) =
                super::mma::loads_and_chunks(mp, o.mma_chunks as usize, o.mma_loads, wpb);
            f.notes.push(mp.describe(chunks, wpb, split, loads));
            let mm = super::mma::body(&mut f, p, mp, wpb, split, chunks, loads);
            let on = super::mma::applies(p, mp, loads.staged(), o.mma_min_m);
            if !mm.after_sync.is_empty() {
                let cond = if generic {
                    bin(BinOp::And, on.clone(), cmp(CmpOp::Le, dim(dm), i64c(8)))
                } else {
                    on.clone()
                };
                after_sync.push(Stmt::BlockSync);
                after_sync.push(Stmt::If {
                    cond,
                    then: mm.after_sync,
                });
            }
            g = vec![
                Stmt::If {
                    cond: on.clone(),
                    then: mm.warps,
                },
                Stmt::If {
                    cond: cmp(CmpOp::Eq, on.clone(), i32c(0)),
                    then: g,
                },
            ];
            gemv_grid = Expr::Select(
                Box::new(on),
                Box::new(super::mma::grid(p, wpb, split)),
                Box::new(gemv_grid),
            );
        }
        if generic {
            body.push(Stmt::If {
                cond: cmp(CmpOp::Le, dim(dm), i64c(8)),
                then: g,
            });
        } else {
            body.extend(g);
        }
    }
    if generic {
        let tm = o.tile_m.max(1) as usize;
        f.notes.push(format!(
            "schedule gpu generic{}: one thread per weight row and tile of {tm} activation rows, {block} threads per block",
            if gemv { " (M > 8)" } else { "" }
        ));
        let g = generic_body(&mut f, p, block, tm);
        if gemv {
            body.push(Stmt::If {
                cond: cmp(CmpOp::Lt, i64c(8), dim(dm)),
                then: g,
            });
        } else {
            body.extend(g);
        }
    }
    let grid = match (gemv, generic) {
        (true, false) => gemv_grid,
        (false, _) => generic_grid,
        (true, true) => Expr::Select(
            Box::new(cmp(CmpOp::Le, dim(dm), i64c(8))),
            Box::new(gemv_grid),
            Box::new(generic_grid),
        ),
    };
    f.launch = Launch::Gpu { grid, block };
    // The barrier and what follows it stay at the top level (every thread reaches it).
    body.extend(after_sync);
    f.body = body;
    f
}

fn zero(t: Ty) -> Expr {
    match t {
        Ty::F32 => f32c(0.0),
        t => Expr::Int(0, t),
    }
}

/// `acc + a * code` in the accumulator type `t` (`a` loaded in its register type).
fn mac(t: Ty, acc: Expr, a: Expr, code: Expr) -> Expr {
    if t == Ty::F32 {
        add(acc, mul(a, cast(Ty::F32, code)))
    } else {
        add(acc, mul(cast(t, a), cast(t, code)))
    }
}

/// Folds a per-group partial sum into the row's total: `f32` totals get the group's
/// scales once; integer totals (exact `i32` output, no scales) add the partial.
#[allow(clippy::too_many_arguments)]
fn fold(
    p: &Plan,
    total: Var,
    total_ty: Ty,
    partial: Var,
    part_ty: Ty,
    row: &Expr,
    n: &Expr,
    g: &Expr,
) -> Stmt {
    if total_ty == Ty::F32 {
        let x = if part_ty == Ty::F32 {
            var(partial)
        } else {
            cast(Ty::F32, var(partial))
        };
        let groups = match p.group {
            Some(gs) => ceil_div(dim(p.k), gs as i64),
            None => i64c(1),
        };
        let scaled = match group_scale(p, row, n, g, &groups) {
            Some(s) => mul(x, s),
            None => x,
        };
        Stmt::Set(total, add(var(total), scaled))
    } else {
        let x = if part_ty == total_ty {
            var(partial)
        } else {
            cast(total_ty, var(partial))
        };
        Stmt::Set(total, add(var(total), x))
    }
}

/// `x >>> s | y << (32 - s)` for a run-time `s` in `0..32` (`I32`): the low word of
/// `y:x` shifted right by `s`, written so that `s = 0` gives `x` (the PTX backend emits
/// one `shf.r.wrap`).
fn funnel_var(x: Expr, y: Expr, s: Expr) -> Expr {
    bin(
        BinOp::Or,
        bin(BinOp::Shr, x, s.clone()),
        bin(BinOp::Shl, bin(BinOp::Shl, y, sub(i32c(31), s)), i32c(1)),
    )
}

/// `x / d` for non-negative `x` and a constant `d > 0` (a shift when `d` is a power of 2).
fn div_pos(x: Expr, d: usize) -> Expr {
    if d.is_power_of_two() {
        bin(BinOp::Shr, x, i64c(d.trailing_zeros() as i64))
    } else {
        div(x, i64c(d as i64))
    }
}

/// `x / d` for a non-negative `I32` `x` and a constant `d > 0`.
fn div_pos32(x: Expr, d: usize) -> Expr {
    if d.is_power_of_two() {
        bin(BinOp::Shr, x, i32c(d.trailing_zeros() as i64))
    } else {
        div(x, i32c(d as i64))
    }
}

/// Loads the words of lane chunks `base + 32u` for `u < unroll` (`base` an `I32`
/// chunk index) of the row starting at byte `wrow` (a multiple of 16): per chunk,
/// `ceil(bytes / 4)` `I32` words holding it from its first bit. The address arithmetic
/// is done once; chunk `u` is a constant offset (`32u` chunks start at the same byte
/// phase). Every load is provably aligned for the backend.
#[allow(clippy::too_many_arguments)]
fn load_chunk_words(
    f: &mut Func,
    out: &mut Vec<Stmt>,
    p: &Plan,
    c: &LaneChunk,
    wrow: Var,
    base: Var,
    unroll: usize,
) -> Vec<Vec<Var>> {
    let cb = c.bytes;
    let nw = cb.div_ceil(4);
    let o = f.var("wo", Ty::I32);
    out.push(Stmt::Let(o, mul(var(base), i32c(cb as i64))));
    let stride = |u: usize| (32 * u * cb) as i64;
    let mut all = Vec::with_capacity(unroll);
    if cb.is_multiple_of(4) {
        let a = f.var("wa", Ty::I64);
        out.push(Stmt::Let(a, add(var(wrow), cast(Ty::I64, var(o)))));
        for u in 0..unroll {
            let mut w = Vec::with_capacity(nw);
            if cb.is_multiple_of(16) {
                for v in 0..cb / 16 {
                    let d = [0, 1, 2, 3].map(|i| f.var(format!("w{u}_{}", 4 * v + i), Ty::I32));
                    out.push(Stmt::LoadVec4 {
                        dst: d,
                        buf: p.weight,
                        offset: add(var(a), i64c(stride(u) + 16 * v as i64)),
                    });
                    w.extend(d);
                }
            } else if cb.is_multiple_of(8) {
                for v in 0..cb / 8 {
                    let x = f.var(format!("wd{u}_{v}"), Ty::I64);
                    out.push(Stmt::Let(
                        x,
                        load_bytes(p.weight, add(var(a), i64c(stride(u) + 8 * v as i64)), 8),
                    ));
                    let lo = f.var(format!("w{u}_{}", 2 * v), Ty::I32);
                    out.push(Stmt::Let(lo, cast(Ty::I32, var(x))));
                    let hi = f.var(format!("w{u}_{}", 2 * v + 1), Ty::I32);
                    out.push(Stmt::Let(
                        hi,
                        cast(Ty::I32, bin(BinOp::Shr, var(x), i64c(32))),
                    ));
                    w.push(lo);
                    w.push(hi);
                }
            } else {
                for v in 0..nw {
                    let x = f.var(format!("w{u}_{v}"), Ty::I32);
                    out.push(Stmt::Let(
                        x,
                        load_bytes(p.weight, add(var(a), i64c(stride(u) + 4 * v as i64)), 4),
                    ));
                    w.push(x);
                }
            }
            all.push(w);
        }
        return all;
    }
    // Unaligned chunks: the aligned words around each, then a funnel shift. The last
    // word is the one holding the chunk's last byte (never past the row).
    let a = f.var("wa", Ty::I64);
    out.push(Stmt::Let(
        a,
        add(var(wrow), cast(Ty::I64, bin(BinOp::And, var(o), i32c(-4)))),
    ));
    let lo2 = f.var("wlo", Ty::I32);
    out.push(Stmt::Let(lo2, bin(BinOp::And, var(o), i32c(3))));
    let sh = f.var("wsh", Ty::I32);
    out.push(Stmt::Let(sh, bin(BinOp::Shl, var(lo2), i32c(3))));
    let alast = f.var("wlast", Ty::I64);
    out.push(Stmt::Let(
        alast,
        add(
            var(a),
            cast(
                Ty::I64,
                bin(BinOp::And, add(var(lo2), i32c(cb as i64 - 1)), i32c(-4)),
            ),
        ),
    ));
    let mut raws = Vec::with_capacity(unroll);
    for u in 0..unroll {
        let mut raw = Vec::with_capacity(nw + 1);
        for v in 0..=nw {
            let off = if v < nw {
                add(var(a), i64c(stride(u) + 4 * v as i64))
            } else {
                add(var(alast), i64c(stride(u)))
            };
            let x = f.var(format!("wr{u}_{v}"), Ty::I32);
            out.push(Stmt::Let(x, load_bytes(p.weight, off, 4)));
            raw.push(x);
        }
        raws.push(raw);
    }
    for (u, raw) in raws.iter().enumerate() {
        let mut w = Vec::with_capacity(nw);
        for v in 0..nw {
            let x = f.var(format!("w{u}_{v}"), Ty::I32);
            out.push(Stmt::Let(
                x,
                funnel_var(var(raw[v]), var(raw[v + 1]), var(sh)),
            ));
            w.push(x);
        }
        all.push(w);
    }
    all
}

/// Chunk words of a warp's rows: `[row][chunk][word]`.
type ChunkWords = Vec<Vec<Vec<Var>>>;

/// Words of lane chunks `min(base + 32u, last)` for `u < count` of each row in
/// `wrows` (`[row][u][word]`), each chunk from its own clamped address, and per chunk
/// its unclamped and clamped indices.
#[allow(clippy::too_many_arguments)]
fn clamped_chunk_words(
    f: &mut Func,
    out: &mut Vec<Stmt>,
    p: &Plan,
    c: &LaneChunk,
    wrows: &[Var],
    base: Var,
    count: usize,
    last: Var,
    tag: &str,
) -> (ChunkWords, Vec<(Var, Var)>) {
    let mut ws = vec![Vec::with_capacity(count); wrows.len()];
    let mut idx = Vec::with_capacity(count);
    for u in 0..count {
        let raw = f.var(format!("{tag}craw{u}"), Ty::I32);
        out.push(Stmt::Let(raw, add(var(base), i32c(32 * u as i64))));
        let cu = f.var(format!("{tag}cidx{u}"), Ty::I32);
        out.push(Stmt::Let(cu, min(var(raw), var(last))));
        for (r, &wrow) in wrows.iter().enumerate() {
            ws[r].extend(load_chunk_words(f, out, p, c, wrow, cu, 1));
        }
        idx.push((raw, cu));
    }
    (ws, idx)
}

/// Weight words of lane chunks `base + 32u` (`u < count`, `base = first + lane`) of
/// each row in `wrows`, staged through the warp's region of shared memory: the warp's
/// `32 * count` chunks of a row are one contiguous byte range, which its lanes load
/// as adjacent 16-byte vectors (every load instruction reads whole 128-byte lines,
/// instead of one word per lane from `32 * count` lines apart) into `b`, then, in
/// `tail` (emitted after the activation loads so that all loads are in flight), store
/// to shared memory and read back as each lane's own chunk words (a lane stride of
/// `bytes / 4` words: conflict-free when that is odd).
#[allow(clippy::too_many_arguments)]
fn staged_words(
    f: &mut Func,
    b: &mut Vec<Stmt>,
    tail: &mut Vec<Stmt>,
    p: &Plan,
    c: &LaneChunk,
    wrows: &[Var],
    base: Var,
    lane32: Var,
    count: usize,
) -> ChunkWords {
    let cb = c.bytes;
    let span = 32 * count * cb;
    let segs = span / 16;
    let rpw = wrows.len();
    // The warp's region: warp index in the block times rpw spans.
    let region = f.var("sregion", Ty::I32);
    b.push(Stmt::Let(
        region,
        mul(
            bin(BinOp::Shr, Expr::Special(Special::ThreadIdx), i32c(5)),
            i32c((rpw * span) as i64),
        ),
    ));
    let first = f.var("sfirst", Ty::I64);
    b.push(Stmt::Let(
        first,
        cast(Ty::I64, mul(sub(var(base), var(lane32)), i32c(cb as i64))),
    ));
    let s16 = f.var("s16", Ty::I32);
    b.push(Stmt::Let(s16, mul(var(lane32), i32c(16))));
    let mut stores = Vec::new();
    for (r, &wrow) in wrows.iter().enumerate() {
        let ga = f.var(format!("sga{r}"), Ty::I64);
        b.push(Stmt::Let(
            ga,
            add(add(var(wrow), var(first)), cast(Ty::I64, var(s16))),
        ));
        for j in 0..segs.div_ceil(32) {
            let d = [0, 1, 2, 3].map(|x| f.var(format!("sw{r}_{j}_{x}"), Ty::I32));
            let load = Stmt::LoadVec4 {
                dst: d,
                buf: p.weight,
                offset: add(var(ga), i64c(512 * j as i64)),
            };
            let store = Stmt::StoreShared4 {
                offset: add(
                    add(var(region), var(s16)),
                    i32c((r * span + 512 * j) as i64),
                ),
                src: d,
            };
            if 32 * (j + 1) <= segs {
                b.push(load);
                stores.push(store);
            } else {
                // The last round: only the lanes with a segment left.
                let cond = cmp(CmpOp::Lt, var(lane32), i32c((segs - 32 * j) as i64));
                b.push(Stmt::If {
                    cond: cond.clone(),
                    then: vec![load],
                });
                stores.push(Stmt::If {
                    cond,
                    then: vec![store],
                });
            }
        }
    }
    // The previous iteration's reads of the region are done before it is rewritten.
    tail.push(Stmt::WarpSync);
    tail.extend(stores);
    tail.push(Stmt::WarpSync);
    shared_chunk_words(f, tail, var(region), lane32, rpw, count, cb, span)
}

/// Each lane's chunk words (`[row][chunk][word]`) read back from a warp's staged
/// spans starting at shared byte `region` (rows `span` bytes apart, lane `l`'s chunk
/// `u` at `(32u + l) * bytes`; a lane stride of `bytes / 4` words, conflict-free when
/// that is odd).
#[allow(clippy::too_many_arguments)]
fn shared_chunk_words(
    f: &mut Func,
    out: &mut Vec<Stmt>,
    region: Expr,
    lane32: Var,
    rpw: usize,
    count: usize,
    bytes: usize,
    span: usize,
) -> ChunkWords {
    let own = f.var("sown", Ty::I32);
    out.push(Stmt::Let(
        own,
        add(region, mul(var(lane32), i32c(bytes as i64))),
    ));
    (0..rpw)
        .map(|r| {
            (0..count)
                .map(|u| {
                    (0..bytes / 4)
                        .map(|v| {
                            let x = f.var(format!("w{u}_{r}_{v}"), Ty::I32);
                            out.push(Stmt::Let(
                                x,
                                Expr::LoadShared(Box::new(add(
                                    var(own),
                                    i32c((r * span + 32 * u * bytes + 4 * v) as i64),
                                ))),
                            ));
                            x
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Asynchronous copies of the warp's rows' spans of one full iteration (`span` bytes
/// per row from chunk `first`, a multiple of 32) to shared byte `dst` (rows `span`
/// apart): lane `l` copies the 16-byte vectors `l, l + 32, ...` of each span.
fn span_copies(
    p: &Plan,
    wrows: &[Var],
    first: Expr,
    bytes: usize,
    span: usize,
    lane32: Var,
    dst: Expr,
) -> Vec<Stmt> {
    let segs = span / 16;
    let mut out = Vec::new();
    let l16 = mul(var(lane32), i32c(16));
    for (r, &wrow) in wrows.iter().enumerate() {
        let src = add(
            add(var(wrow), mul(first.clone(), i64c(bytes as i64))),
            cast(Ty::I64, l16.clone()),
        );
        for j in 0..segs.div_ceil(32) {
            let copy = Stmt::Async(AsyncOp::Copy16 {
                shared: add(
                    dst.clone(),
                    add(l16.clone(), i32c((r * span + 512 * j) as i64)),
                ),
                buf: p.weight,
                offset: add(src.clone(), i64c(512 * j as i64)),
            });
            if 32 * (j + 1) <= segs {
                out.push(copy);
            } else {
                // The last round: only the lanes with a vector left.
                out.push(Stmt::If {
                    cond: cmp(CmpOp::Lt, var(lane32), i32c((segs - 32 * j) as i64)),
                    then: vec![copy],
                });
            }
        }
    }
    out
}

/// The vector path of one M tile: lanes take interleaved lane chunks (coalesced
/// loads), `unroll` chunks per lane per iteration with every load issued before the
/// arithmetic, then one chunk per lane for the remainder. Adds into `total` and sets
/// `tail_start` to the first weight it did not cover.
#[allow(clippy::too_many_arguments)]
fn vector_path(
    f: &mut Func,
    p: &Plan,
    c: LaneChunk,
    unroll: usize,
    ns: &[Var],
    lane: Var,
    rows: &[Var],
    total: &[Vec<Var>],
    total_ty: Ty,
    tail_start: Var,
    masked_tail: bool,
    loads: (WeightLoads, usize),
    spread: Option<bool>,
    prefetch: bool,
    magic: Magic,
) -> Vec<Stmt> {
    let l = p.layout;
    // The spread decode, when the layout and the chunk's group steps allow it.
    let spread = if let (true, Some(add_form)) = (p.int, spread) {
        SpreadPlan::for_layout(&l)
            .map(|sp| sp.with_add_form(add_form))
            .filter(|sp| {
                c.sub.is_multiple_of(sp.group_weights())
                    && c.weights.is_multiple_of(sp.group_weights())
            })
    } else {
        None
    };
    let dk = p.k;
    let tm = rows.len();
    let rpw = ns.len();
    let mut vb = Vec::new();
    // The branch runs only when these are multiples of 16: masking makes that visible
    // to the backend's alignment analysis without changing the values.
    let wrows: Vec<Var> = ns
        .iter()
        .enumerate()
        .map(|(r, &n)| {
            let w = f.var(format!("wrow16_{r}"), Ty::I64);
            vb.push(Stmt::Let(
                w,
                mul(var(n), bin(BinOp::And, row_bytes(&l, dk), i64c(-16))),
            ));
            w
        })
        .collect();
    let act_bytes = p.bufs[p.act].elem.bytes() as i64;
    let kstride = if p.int || magic.on() {
        bin(BinOp::And, dim(dk), i64c(-16 / act_bytes))
    } else {
        dim(dk)
    };
    let arow: Vec<Var> = (0..tm)
        .map(|i| {
            let a = f.var(format!("xrow{i}"), Ty::I64);
            vb.push(Stmt::Let(a, mul(var(rows[i]), kstride.clone())));
            a
        })
        .collect();
    // Without groups the lanes keep exact integer sums and convert once at the end.
    let lane_int: Option<Vec<Vec<Var>>> = (p.int && p.group.is_none()).then(|| {
        (0..rpw)
            .map(|r| {
                (0..tm)
                    .map(|i| {
                        let v = f.var(format!("isum{r}_{i}"), p.acc);
                        vb.push(Stmt::Let(v, zero(p.acc)));
                        v
                    })
                    .collect()
            })
            .collect()
    });
    let nch = f.var("nchunks", Ty::I64);
    vb.push(Stmt::Let(nch, div_pos(dim(dk), c.weights)));
    let lane32 = f.var("lane32", Ty::I32);
    vb.push(Stmt::Let(lane32, Expr::Special(Special::LaneId)));
    // Full iterations stage the warp's weight bytes through shared memory (see
    // `staged_words`) when the option is on and chunks are whole words.
    let wpb = match f.launch {
        Launch::Gpu { block, .. } => (block / 32) as usize,
        Launch::Cpu => 1,
    };
    // One buffer of the warp's rows' spans per block, `stages` with asynchronous
    // copies, whose iterations take one chunk per lane and row: the copies in flight
    // replace the unrolled loads (measured on an H200, 3.5-bit i8, M = 1, 28672x8192:
    // 35.2 µs against 40.4 with two chunks).
    let (loads, stages) = loads;
    let (staged_unroll, buffers) = match loads {
        WeightLoads::Async => (1, stages),
        _ => (unroll, 1),
    };
    let span = 32 * staged_unroll * c.bytes;
    let smem = buffers * wpb * rpw * span;
    // Staging through registers: at most 32 KiB per block (more costs occupancy);
    // asynchronous copies: the 48 KiB of static shared memory. Larger tiles, and
    // chunks of partial words, load directly.
    let limit = if buffers > 1 { 48 * 1024 } else { 32 * 1024 };
    let staged = loads.staged() && c.bytes.is_multiple_of(4) && smem <= limit;
    let copies = staged && loads == WeightLoads::Async;
    let unroll = if staged { staged_unroll } else { unroll };
    if staged {
        f.shared_bytes = f.shared_bytes.max(smem);
    }
    if copies {
        f.notes.push(format!(
            "vector path ({rpw} row(s) per warp): full iterations copy the warp's weight spans to shared memory by cp.async ({buffers} buffers of {} bytes per warp), one chunk per lane and row",
            rpw * span
        ));
    }
    let per_iter = 32 * unroll;
    let nit = f.var("niter", Ty::I64);
    vb.push(Stmt::Let(nit, div_pos(var(nch), per_iter)));

    // Chunks `base + 32u`, u < count: loads first (weights, then activations), then
    // the arithmetic. Offsets of chunk u are constants from per-iteration bases.
    // With `last` (the row's last chunk index), chunk u is `min(base + 32u, last)`
    // (loaded from its own address) and its contribution counts only when
    // `base + 32u <= last`.
    let chunk_body = |f: &mut Func,
                      base: Var,
                      count: usize,
                      last: Option<Var>,
                      staged: bool,
                      preloaded: Option<Vec<Vec<Vec<Var>>>>|
     -> Vec<Stmt> {
        let mut b = Vec::new();
        let cw = c.weights as i64;
        // Per chunk u: (unclamped index, clamped index) in masked mode.
        let mut clamped: Vec<(Var, Var)> = Vec::new();
        // words[r][u]: the chunk words of weight row r, chunk u.
        let mut stage_tail = Vec::new();
        let mut words: Vec<Vec<Vec<Var>>> = match last {
            None if preloaded.is_some() => preloaded.unwrap_or_default(),
            None if staged => staged_words(
                f,
                &mut b,
                &mut stage_tail,
                p,
                &c,
                &wrows,
                base,
                lane32,
                count,
            ),
            None => wrows
                .iter()
                .map(|&wrow| load_chunk_words(f, &mut b, p, &c, wrow, base, count))
                .collect(),
            Some(last) => {
                let (ws, idx) =
                    clamped_chunk_words(f, &mut b, p, &c, &wrows, base, count, last, "");
                clamped = idx;
                ws
            }
        };
        // Activation addresses: per row (chunk u at a constant offset), or per chunk
        // and row in masked mode.
        let xbase = |f: &mut Func, b: &mut Vec<Stmt>, i: usize, from: Var| -> Var {
            let x = f.var(format!("xa{i}"), Ty::I64);
            b.push(Stmt::Let(
                x,
                add(var(arow[i]), cast(Ty::I64, mul(var(from), i32c(cw)))),
            ));
            x
        };
        let xa: Vec<Vec<Var>> = if clamped.is_empty() {
            let v: Vec<Var> = (0..tm).map(|i| xbase(f, &mut b, i, base)).collect();
            vec![v; count]
        } else {
            clamped
                .iter()
                .map(|&(_, cu)| (0..tm).map(|i| xbase(f, &mut b, i, cu)).collect())
                .collect()
        };
        let xoff = |u: usize| {
            if clamped.is_empty() {
                32 * u as i64 * cw
            } else {
                0
            }
        };
        let mut acts: Vec<Vec<Vec<[Var; 4]>>> = Vec::new();
        if p.int {
            for (u, xau) in xa.iter().enumerate().take(count) {
                let mut per_row = Vec::new();
                for (i, &xai) in xau.iter().enumerate() {
                    let mut vs = Vec::new();
                    for v in 0..c.weights / 16 {
                        let d =
                            [0, 1, 2, 3].map(|x| f.var(format!("x{u}_{i}_{}", 4 * v + x), Ty::I32));
                        b.push(Stmt::LoadVec4 {
                            dst: d,
                            buf: p.act,
                            offset: add(var(xai), i64c(xoff(u) + 16 * v as i64)),
                        });
                        vs.push(d);
                    }
                    per_row.push(vs);
                }
                acts.push(per_row);
            }
        } else if magic.on() {
            // Float activations as 16-byte vectors: `acts[u][i][v]`, converted per
            // element where the step uses them.
            for (u, xau) in xa.iter().enumerate().take(count) {
                let mut per_row = Vec::new();
                for (i, &xai) in xau.iter().enumerate() {
                    let mut vs = Vec::new();
                    for v in 0..c.weights * act_bytes as usize / 16 {
                        let d = [0, 1, 2, 3]
                            .map(|x| f.var(format!("xv{u}_{i}_{}", 4 * v + x), Ty::I32));
                        b.push(Stmt::LoadVec4 {
                            dst: d,
                            buf: p.act,
                            offset: add(
                                mul(var(xai), i64c(act_bytes)),
                                i64c((xoff(u) * act_bytes) + 16 * v as i64),
                            ),
                        });
                        vs.push(d);
                    }
                    per_row.push(vs);
                }
                acts.push(per_row);
            }
        }
        // Staged weights reach the lanes now (their global loads were issued first).
        b.append(&mut stage_tail);
        if p.int && spread.is_none() {
            let masks = sign_masks(&l, c.weights, c.bytes.div_ceil(4));
            for wr in words.iter_mut() {
                for (u, w) in wr.iter_mut().enumerate() {
                    for (a, &m) in masks.iter().enumerate() {
                        if m != 0 {
                            let x = f.var(format!("wx{u}_{a}"), Ty::I32);
                            b.push(Stmt::Let(
                                x,
                                bin(BinOp::Xor, var(w[a]), i32c(m as i32 as i64)),
                            ));
                            w[a] = x;
                        }
                    }
                }
            }
        }
        // Group of chunk u: a constant step from the base chunk's group when 32 chunks
        // span whole groups.
        let g0 = f.var("gb", Ty::I32);
        let group_step = match p.group {
            Some(gs)
                if (gs as usize) >= c.weights && (32 * c.weights).is_multiple_of(gs as usize) =>
            {
                b.push(Stmt::Let(g0, div_pos32(var(base), gs as usize / c.weights)));
                Some((32 * c.weights / gs as usize) as i64)
            }
            Some(gs) if (gs as usize) < c.weights => {
                b.push(Stmt::Let(
                    g0,
                    mul(var(base), i32c((c.weights / gs as usize) as i64)),
                ));
                Some((32 * c.weights / gs as usize) as i64)
            }
            _ => {
                b.push(Stmt::Let(g0, i32c(0)));
                None
            }
        };
        for u in 0..count {
            for s in 0..c.weights / c.sub {
                let j0 = s * c.sub;
                let gexpr = match (p.group, group_step) {
                    (None, _) => i64c(0),
                    (Some(gs), _) if !clamped.is_empty() => {
                        let cu = clamped[u].1;
                        let gs = gs as usize;
                        if gs >= c.weights {
                            cast(Ty::I64, div_pos32(var(cu), gs / c.weights))
                        } else {
                            add(
                                cast(Ty::I64, mul(var(cu), i32c((c.weights / gs) as i64))),
                                i64c(s as i64),
                            )
                        }
                    }
                    (Some(_), Some(step)) => {
                        add(cast(Ty::I64, var(g0)), i64c(step * u as i64 + s as i64))
                    }
                    (Some(gs), None) => cast(
                        Ty::I64,
                        div_pos32(add(var(base), i32c(32 * u as i64)), gs as usize / c.weights),
                    ),
                };
                let part_ty = if p.int { Ty::I32 } else { Ty::F32 };
                // parts[r][i]: weight row r times activation row i over this step.
                let parts: Vec<Vec<Var>> = (0..rpw)
                    .map(|r| {
                        (0..tm)
                            .map(|i| {
                                let v = f.var(format!("part{u}_{r}_{i}"), part_ty);
                                b.push(Stmt::Let(v, zero(part_ty)));
                                v
                            })
                            .collect()
                    })
                    .collect();
                if let Some(sp) = &spread {
                    // accs[r][i][k]: the factor-k accumulator (see `SpreadPlan`).
                    let nfac = sp.factors().len();
                    let accs: Vec<Vec<Vec<Var>>> = (0..rpw)
                        .map(|r| {
                            (0..tm)
                                .map(|i| {
                                    (0..nfac)
                                        .map(|k| {
                                            let v = f.var(format!("sacc{u}_{r}_{i}_{k}"), Ty::I32);
                                            b.push(Stmt::Let(v, i32c(0)));
                                            v
                                        })
                                        .collect()
                                })
                                .collect()
                        })
                        .collect();
                    let gw = sp.group_weights();
                    let nf = sp.n_fields();
                    for g in j0 / gw..(j0 + c.sub) / gw {
                        let qs: Vec<Vec<Var>> = (0..rpw)
                            .map(|r| sp.quads(f, &mut b, &words[r][u], g, &format!("{u}_{r}_{g}")))
                            .collect();
                        for i in 0..tm {
                            let xs: Vec<Var> = (0..nf)
                                .map(|k| {
                                    let wi = g * gw / 4 + k;
                                    acts[u][i][wi / 4][wi % 4]
                                })
                                .collect();
                            for q in 0..nf {
                                let aw = if nf == 1 {
                                    xs[0]
                                } else {
                                    let v = f.var(format!("xp{u}_{i}_{g}_{q}"), Ty::I32);
                                    b.push(Stmt::Let(v, sp.act_word(q, &xs)));
                                    v
                                };
                                let k = sp.factor_of(q);
                                for (acc_r, q_r) in accs.iter().zip(&qs) {
                                    let acc = acc_r[i][k];
                                    b.push(Stmt::Set(
                                        acc,
                                        Expr::Dot4 {
                                            a: Box::new(var(aw)),
                                            b: Box::new(var(q_r[q])),
                                            acc: Box::new(var(acc)),
                                        },
                                    ));
                                }
                            }
                        }
                    }
                    for r in 0..rpw {
                        for i in 0..tm {
                            b.push(Stmt::Set(parts[r][i], sp.combine(&accs[r][i])));
                        }
                    }
                } else if p.int {
                    // Bias correction for one or two rows (see `packed_quad`); it
                    // depends on the activations only, so all weight rows share it.
                    let biased = tm <= 2;
                    let corr: Vec<Var> = if biased {
                        (0..tm)
                            .map(|i| {
                                let v = f.var(format!("corr{u}_{i}"), Ty::I32);
                                b.push(Stmt::Let(v, i32c(0)));
                                v
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let mut any_bias = false;
                    for q in j0 / 4..(j0 + c.sub) / 4 {
                        let mut bias = 0;
                        for r in 0..rpw {
                            let pw = f.var(format!("q{u}_{r}_{q}"), Ty::I32);
                            let (e, bw) = packed_quad(&l, &words[r][u], q, biased);
                            bias = bw;
                            b.push(Stmt::Let(pw, e));
                            for i in 0..tm {
                                let aw = acts[u][i][q / 4][q % 4];
                                b.push(Stmt::Set(
                                    parts[r][i],
                                    Expr::Dot4 {
                                        a: Box::new(var(aw)),
                                        b: Box::new(var(pw)),
                                        acc: Box::new(var(parts[r][i])),
                                    },
                                ));
                            }
                        }
                        if bias != 0 {
                            any_bias = true;
                            for i in 0..tm {
                                let aw = acts[u][i][q / 4][q % 4];
                                b.push(Stmt::Set(
                                    corr[i],
                                    Expr::Dot4 {
                                        a: Box::new(var(aw)),
                                        b: Box::new(i32c(bias as i32 as i64)),
                                        acc: Box::new(var(corr[i])),
                                    },
                                ));
                            }
                        }
                    }
                    if any_bias {
                        for pr in &parts {
                            for i in 0..tm {
                                b.push(Stmt::Set(pr[i], sub(var(pr[i]), var(corr[i]))));
                            }
                        }
                    }
                } else if magic.on() {
                    let fold = magic == Magic::Fold && tm == 1;
                    // Activations of the step, loaded once for every weight row.
                    let xs: Vec<Vec<Var>> = (0..tm)
                        .map(|i| {
                            (j0..j0 + c.sub)
                                .map(|j| {
                                    let v = f.var(format!("xf{u}_{i}_{j}"), Ty::F32);
                                    let byte = j * act_bytes as usize;
                                    let word = var(acts[u][i][byte / 16][byte % 16 / 4]);
                                    let half = !byte.is_multiple_of(4);
                                    let e = match p.bufs[p.act].elem {
                                        Elem::F16 if half => Expr::F16ToF32(Box::new(bin(
                                            BinOp::Shr,
                                            word,
                                            i32c(16),
                                        ))),
                                        Elem::F16 => Expr::F16ToF32(Box::new(word)),
                                        Elem::BF16 if half => Expr::FromBits(Box::new(bin(
                                            BinOp::And,
                                            word,
                                            i32c(0xffff_0000u32 as i32 as i64),
                                        ))),
                                        Elem::BF16 => Expr::FromBits(Box::new(bin(
                                            BinOp::Shl,
                                            word,
                                            i32c(16),
                                        ))),
                                        _ => Expr::FromBits(Box::new(word)),
                                    };
                                    b.push(Stmt::Let(v, e));
                                    v
                                })
                                .collect()
                        })
                        .collect();
                    for r in 0..rpw {
                        // One window per unit (or field): see `float_decode`.
                        let mut windows: Vec<((usize, usize), Var)> = Vec::new();
                        for j in j0..j0 + c.sub {
                            let m = magic_field(&l, j);
                            let key = (m.from, m.dest);
                            let wv = match windows.iter().find(|(k, _)| *k == key) {
                                Some(&(_, v)) => v,
                                None => {
                                    let v = f.var(format!("win{u}_{r}_{j}"), Ty::I32);
                                    b.push(Stmt::Let(v, window(&words[r][u], &m)));
                                    windows.push((key, v));
                                    v
                                }
                            };
                            let cv = f.var(format!("cf{u}_{r}_{j}"), Ty::F32);
                            let e = if fold {
                                magic_biased(var(wv), &m)
                            } else {
                                magic_code(var(wv), &m)
                            };
                            b.push(Stmt::Let(cv, e));
                            for i in 0..tm {
                                b.push(Stmt::Set(
                                    parts[r][i],
                                    add(var(parts[r][i]), mul(var(xs[i][j - j0]), var(cv))),
                                ));
                            }
                        }
                    }
                    if fold {
                        // The biases' share of the step, once for all weight rows.
                        for i in 0..tm {
                            let corr = f.var(format!("fc{u}_{i}_{j0}"), Ty::F32);
                            b.push(Stmt::Let(corr, f32c(0.0)));
                            for j in j0..j0 + c.sub {
                                let bias = f32c(magic_field(&l, j).bias);
                                b.push(Stmt::Set(
                                    corr,
                                    add(var(corr), mul(var(xs[i][j - j0]), bias)),
                                ));
                            }
                            for pr in &parts {
                                b.push(Stmt::Set(pr[i], sub(var(pr[i]), var(corr))));
                            }
                        }
                    }
                } else {
                    let mut j = j0;
                    while j < j0 + c.sub {
                        let run = 16.min(j0 + c.sub - j);
                        for r in 0..rpw {
                            let codes: Vec<Var> = (j..j + run)
                                .map(|jj| {
                                    let v = f.var(format!("c{u}_{r}_{jj}"), Ty::I32);
                                    b.push(Stmt::Let(v, code_expr(&l, &words[r][u], jj)));
                                    v
                                })
                                .collect();
                            for i in 0..tm {
                                b.push(Stmt::Set(
                                    parts[r][i],
                                    Expr::DotRun {
                                        buf: p.act,
                                        index: Box::new(add(
                                            var(xa[u][i]),
                                            i64c(xoff(u) + j as i64),
                                        )),
                                        codes: codes.clone(),
                                        acc: Box::new(var(parts[r][i])),
                                    },
                                ));
                            }
                        }
                        j += run;
                    }
                }
                if let Some(&(raw, _)) = clamped.get(u) {
                    let last = last.expect("masked mode");
                    for &pv in parts.iter().flatten() {
                        b.push(Stmt::Set(
                            pv,
                            Expr::Select(
                                Box::new(cmp(CmpOp::Le, var(raw), var(last))),
                                Box::new(var(pv)),
                                Box::new(zero(part_ty)),
                            ),
                        ));
                    }
                }
                for r in 0..rpw {
                    for i in 0..tm {
                        match &lane_int {
                            Some(li) => b.push(Stmt::Set(
                                li[r][i],
                                add(
                                    var(li[r][i]),
                                    if p.acc == Ty::I32 {
                                        var(parts[r][i])
                                    } else {
                                        cast(p.acc, var(parts[r][i]))
                                    },
                                ),
                            )),
                            None => b.push(fold(
                                p,
                                total[r][i],
                                total_ty,
                                parts[r][i],
                                part_ty,
                                &var(rows[i]),
                                &var(ns[r]),
                                &gexpr,
                            )),
                        }
                    }
                }
            }
        }
        b
    };

    // Full iterations: every lane has `unroll` whole chunks (a uniform loop).
    let it = f.var("it", Ty::I64);
    let mut ib = Vec::new();
    let base = f.var("cbase", Ty::I32);
    ib.push(Stmt::Let(base, add(cast(Ty::I32, var(it)), var(lane32))));
    // Statements before the loop, run only when there is a full iteration.
    let mut pro = Vec::new();
    if prefetch && !staged {
        // Software pipelining: the words of the next iteration's chunks (indices
        // clamped to the row's last chunk, so the last prefetch stays in bounds and is
        // discarded) are loaded before this iteration's arithmetic.
        let plast = f.var("plast", Ty::I32);
        pro.push(Stmt::Let(plast, cast(Ty::I32, sub(var(nch), i64c(1)))));
        let (next, _) = clamped_chunk_words(f, &mut pro, p, &c, &wrows, lane32, unroll, plast, "p");
        let nb = f.var("nbase", Ty::I32);
        ib.push(Stmt::Let(nb, add(var(base), i32c(per_iter as i64))));
        let (fetched, _) = clamped_chunk_words(f, &mut ib, p, &c, &wrows, nb, unroll, plast, "n");
        ib.extend(chunk_body(f, base, unroll, None, false, Some(next.clone())));
        for (nr, fr) in next.iter().zip(&fetched) {
            for (nu, fu) in nr.iter().zip(fr) {
                for (&nv, &fv) in nu.iter().zip(fu) {
                    ib.push(Stmt::Set(nv, var(fv)));
                }
            }
        }
    } else if copies {
        // Asynchronous copies into `buffers` rotating buffers: the first
        // `buffers - 1` iterations' spans are copied before the loop; each iteration
        // starts the copies `buffers - 1` iterations ahead into the buffer the
        // previous iteration read, waits for its own and reads its lanes' words.
        let region = f.var("aregion", Ty::I32);
        let bsize = (rpw * span) as i64;
        let ahead = buffers as i64 - 1;
        pro.push(Stmt::Let(
            region,
            mul(
                bin(BinOp::Shr, Expr::Special(Special::ThreadIdx), i32c(5)),
                i32c(buffers as i64 * bsize),
            ),
        ));
        let boff = f.var("abuf", Ty::I32);
        pro.push(Stmt::Let(boff, i32c(0)));
        // An earlier M tile's reads of the region are done before it is refilled.
        pro.push(Stmt::WarpSync);
        let end = mul(var(nit), i64c(per_iter as i64));
        for s in 0..ahead {
            let first = i64c(s * per_iter as i64);
            pro.push(Stmt::If {
                cond: cmp(CmpOp::Lt, first.clone(), end.clone()),
                then: span_copies(
                    p,
                    &wrows,
                    first,
                    c.bytes,
                    span,
                    lane32,
                    add(var(region), i32c(s * bsize)),
                ),
            });
            pro.push(Stmt::Async(AsyncOp::Commit));
        }
        // Every lane has read the buffer the previous iteration decoded (the one
        // refilled now).
        ib.push(Stmt::WarpSync);
        let next = add(var(it), i64c(ahead * per_iter as i64));
        let refill = Expr::Select(
            Box::new(cmp(CmpOp::Eq, var(boff), i32c(0))),
            Box::new(i32c(ahead * bsize)),
            Box::new(sub(var(boff), i32c(bsize))),
        );
        ib.push(Stmt::If {
            cond: cmp(CmpOp::Lt, next.clone(), end),
            then: span_copies(
                p,
                &wrows,
                next,
                c.bytes,
                span,
                lane32,
                add(var(region), refill),
            ),
        });
        ib.push(Stmt::Async(AsyncOp::Commit));
        ib.push(Stmt::Async(AsyncOp::Wait(ahead as u32)));
        ib.push(Stmt::WarpSync);
        let words = shared_chunk_words(
            f,
            &mut ib,
            add(var(region), var(boff)),
            lane32,
            rpw,
            unroll,
            c.bytes,
            span,
        );
        ib.extend(chunk_body(f, base, unroll, None, false, Some(words)));
        ib.push(Stmt::Set(
            boff,
            Expr::Select(
                Box::new(cmp(CmpOp::Eq, var(boff), i32c(ahead * bsize))),
                Box::new(i32c(0)),
                Box::new(add(var(boff), i32c(bsize))),
            ),
        ));
    } else {
        ib.extend(chunk_body(f, base, unroll, None, staged, None));
    }
    let full = Stmt::For {
        var: it,
        start: i64c(0),
        end: mul(var(nit), i64c(per_iter as i64)),
        step: per_iter as i64,
        kind: LoopKind::Serial,
        body: ib,
    };
    if pro.is_empty() {
        vb.push(full);
    } else {
        pro.push(full);
        if copies {
            // The last iterations' groups are empty; nothing is left in flight.
            pro.push(Stmt::Async(AsyncOp::Wait(0)));
        }
        vb.push(Stmt::If {
            cond: cmp(CmpOp::Lt, i64c(0), var(nit)),
            then: pro,
        });
    }
    if masked_tail {
        // The remaining whole chunks: one more (masked) iteration, uniform.
        let done = f.var("cdone", Ty::I64);
        vb.push(Stmt::Let(done, mul(var(nit), i64c(per_iter as i64))));
        let last = f.var("clast", Ty::I32);
        let mut rb = vec![Stmt::Let(last, cast(Ty::I32, sub(var(nch), i64c(1))))];
        let mb = f.var("mbase", Ty::I32);
        rb.push(Stmt::Let(mb, add(cast(Ty::I32, var(done)), var(lane32))));
        rb.extend(chunk_body(f, mb, unroll, Some(last), false, None));
        vb.push(Stmt::If {
            cond: cmp(CmpOp::Lt, var(done), var(nch)),
            then: rb,
        });
    } else {
        // The remaining whole chunks, one per lane.
        let cr = f.var("cr", Ty::I64);
        let cr32 = f.var("cr32", Ty::I32);
        let mut rb = vec![Stmt::Let(cr32, cast(Ty::I32, var(cr)))];
        rb.extend(chunk_body(f, cr32, 1, None, false, None));
        vb.push(Stmt::For {
            var: cr,
            start: add(mul(var(nit), i64c(per_iter as i64)), var(lane)),
            end: var(nch),
            step: 32,
            kind: LoopKind::Serial,
            body: rb,
        });
    }
    if let Some(li) = &lane_int {
        let z = f.var("g0", Ty::I64);
        vb.push(Stmt::Let(z, i64c(0)));
        for r in 0..rpw {
            for i in 0..tm {
                vb.push(fold(
                    p,
                    total[r][i],
                    total_ty,
                    li[r][i],
                    p.acc,
                    &var(rows[i]),
                    &var(ns[r]),
                    &var(z),
                ));
            }
        }
    }
    vb.push(Stmt::Set(tail_start, mul(var(nch), i64c(c.weights as i64))));
    vb
}

/// How float-activation chunks decode their codes (see [`GpuOptions::float_magic`] and
/// [`GpuOptions::float_fold`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Magic {
    Off,
    Subtract,
    Fold,
}

impl Magic {
    fn on(self) -> bool {
        self != Magic::Off
    }
}

#[allow(clippy::too_many_arguments)]
fn gemv_body(
    f: &mut Func,
    p: &Plan,
    wpb: i64,
    rpw: usize,
    tiles: &[u32],
    chunk: Option<LaneChunk>,
    unroll: usize,
    masked_tail: bool,
    loads: (WeightLoads, usize),
    spread: Option<bool>,
    prefetch: bool,
    magic: Magic,
) -> Vec<Stmt> {
    let (dm, dn, dk) = (p.m, p.n, p.k);
    let l = p.layout;
    let mut out = Vec::new();
    let lane = f.var("lane", Ty::I64);
    out.push(Stmt::Let(
        lane,
        cast(Ty::I64, Expr::Special(Special::LaneId)),
    ));
    let warp = f.var("warp", Ty::I64);
    out.push(Stmt::Let(
        warp,
        cast(
            Ty::I64,
            bin(BinOp::Shr, Expr::Special(Special::ThreadIdx), i32c(5)),
        ),
    ));
    // The warp's first weight row; its rows are n .. n + rpw (clamped to N - 1 for
    // loads, stores guarded).
    let n = f.var("n", Ty::I64);
    out.push(Stmt::Let(
        n,
        mul(
            add(
                mul(cast(Ty::I64, Expr::Special(Special::BlockIdx)), i64c(wpb)),
                var(warp),
            ),
            i64c(rpw as i64),
        ),
    ));
    let mut row = Vec::new();
    let vec_ok = f.var("vec_ok", Ty::I32);
    let act_bytes = p.bufs[p.act].elem.bytes() as i64;
    let aligned = |e: Expr| cmp(CmpOp::Eq, bin(BinOp::Rem, e, i64c(16)), i64c(0));
    let cond = if chunk.is_none() {
        i32c(0)
    } else if p.int || magic.on() {
        // Activations are loaded as 16-byte vectors too.
        bin(
            BinOp::And,
            aligned(row_bytes(&l, dk)),
            aligned(mul(dim(dk), i64c(act_bytes))),
        )
    } else {
        aligned(row_bytes(&l, dk))
    };
    row.push(Stmt::Let(vec_ok, cond));
    let float_out = p.out_elem != Elem::I32;
    let mut prev = 0u32;
    for &t in tiles {
        let cond = if prev == 0 {
            cmp(CmpOp::Le, dim(dm), i64c(t as i64))
        } else {
            bin(
                BinOp::And,
                cmp(CmpOp::Lt, i64c(prev as i64), dim(dm)),
                cmp(CmpOp::Le, dim(dm), i64c(t as i64)),
            )
        };
        let mut v = vec![Stmt::Comment(format!("M tile of {t} rows"))];
        // Measured on an H200 (3.5-bit, i8, K 8192..28672): tiles of 4 rows are
        // fastest with half the M = 1 chunks in flight (82 vs 87 µs at 8192x28672),
        // 1-2 rows and 8 rows with `unroll / t`.
        // With more than two weight rows per warp (integer activations), the chunks
        // in flight per lane shrink so that rows x chunks stays at about 2 x `unroll`.
        // Float activations with the magic decode: half of `unroll / t` (measured
        // f16, 4 rows per warp, M = 4: 108 µs with 1 chunk in flight against 120 with 2).
        let unroll = if !p.int && magic.on() {
            (unroll / (2 * t as usize)).max(1)
        } else if t > 2 {
            (2 * unroll / t as usize).max(1)
        } else if p.int && rpw > 2 {
            (2 * unroll / (t as usize * rpw)).max(1)
        } else {
            (unroll / t as usize).max(1)
        };
        // The masked tail measured slower for 1 row (one more round of decode work
        // than needed) and faster for 8 rows (145 vs 167 µs at 28672x8192).
        let masked_tail = masked_tail && t >= 4;
        v.extend(gemv_tile(
            f,
            p,
            t as usize,
            n,
            rpw,
            lane,
            vec_ok,
            chunk,
            unroll,
            float_out,
            masked_tail,
            loads,
            spread,
            prefetch,
            magic,
        ));
        row.push(Stmt::If { cond, then: v });
        prev = t;
    }
    out.push(Stmt::If {
        cond: cmp(CmpOp::Lt, var(n), dim(dn)),
        then: row,
    });
    out
}

#[allow(clippy::too_many_arguments)]
fn gemv_tile(
    f: &mut Func,
    p: &Plan,
    tm: usize,
    n0: Var,
    rpw: usize,
    lane: Var,
    vec_ok: Var,
    chunk: Option<LaneChunk>,
    unroll: usize,
    float_out: bool,
    masked_tail: bool,
    loads: (WeightLoads, usize),
    spread: Option<bool>,
    prefetch: bool,
    magic: Magic,
) -> Vec<Stmt> {
    let (dm, dn, dk) = (p.m, p.n, p.k);
    let l = p.layout;
    let mut out = Vec::new();
    let mut rows = Vec::new();
    let mut arow = Vec::new();
    let total_ty = if float_out { Ty::F32 } else { p.acc };
    for i in 0..tm {
        let r = f.var(format!("row{i}"), Ty::I64);
        out.push(Stmt::Let(r, min(i64c(i as i64), sub(dim(dm), i64c(1)))));
        let a = f.var(format!("arow{i}"), Ty::I64);
        out.push(Stmt::Let(a, mul(var(r), dim(dk))));
        rows.push(r);
        arow.push(a);
    }
    // Weight rows of the warp (clamped for loads) and their totals per activation row.
    let mut ns = Vec::new();
    let mut wrows = Vec::new();
    let mut total: Vec<Vec<Var>> = Vec::new();
    for r in 0..rpw {
        let n = if rpw == 1 {
            n0
        } else {
            let n = f.var(format!("n{r}"), Ty::I64);
            out.push(Stmt::Let(
                n,
                min(add(var(n0), i64c(r as i64)), sub(dim(dn), i64c(1))),
            ));
            n
        };
        let w = f.var(format!("wrow{r}"), Ty::I64);
        out.push(Stmt::Let(w, mul(var(n), row_bytes(&l, dk))));
        ns.push(n);
        wrows.push(w);
        total.push(
            (0..tm)
                .map(|i| {
                    let t = f.var(format!("total{r}_{i}"), total_ty);
                    out.push(Stmt::Let(t, zero(total_ty)));
                    t
                })
                .collect(),
        );
    }
    let tail_start = f.var("tail_start", Ty::I64);
    out.push(Stmt::Let(tail_start, i64c(0)));
    if let Some(c) = chunk {
        let vb = vector_path(
            f,
            p,
            c,
            unroll,
            &ns,
            lane,
            &rows,
            &total,
            total_ty,
            tail_start,
            masked_tail,
            loads,
            spread,
            prefetch,
            magic,
        );
        out.push(Stmt::If {
            cond: cmp(CmpOp::Ne, var(vec_ok), i32c(0)),
            then: vb,
        });
    }
    // Scalar path: whatever the vector path left (all of K when it did not run).
    let (gsize, g_start, groups) = match p.group {
        Some(g) => (
            i64c(g as i64),
            div(var(tail_start), i64c(g as i64)),
            ceil_div(dim(dk), g as i64),
        ),
        None => (dim(dk), i64c(0), i64c(1)),
    };
    let g = f.var("gt", Ty::I64);
    let mut gbody = Vec::new();
    let ka = f.var("ka", Ty::I64);
    gbody.push(Stmt::Let(
        ka,
        bin(BinOp::Max, mul(var(g), gsize.clone()), var(tail_start)),
    ));
    let kb = f.var("kb", Ty::I64);
    gbody.push(Stmt::Let(
        kb,
        min(add(mul(var(g), gsize.clone()), gsize), dim(dk)),
    ));
    let accs: Vec<Vec<Var>> = (0..rpw)
        .map(|r| {
            (0..tm)
                .map(|i| {
                    let v = f.var(format!("acc{r}_{i}"), p.acc);
                    gbody.push(Stmt::Let(v, zero(p.acc)));
                    v
                })
                .collect()
        })
        .collect();
    let k = f.var("k", Ty::I64);
    let mut kbody = vec![Stmt::Comment("scalar path: generic unpack".into())];
    let acts: Vec<Var> = (0..tm)
        .map(|i| {
            let a = f.var(format!("xs{i}"), p.bufs[p.act].elem.reg());
            kbody.push(Stmt::Let(a, load(p.act, add(var(arow[i]), var(k)))));
            a
        })
        .collect();
    for r in 0..rpw {
        let code = decode_one(f, &mut kbody, &l, p.weight, var(wrows[r]), var(k));
        for i in 0..tm {
            kbody.push(Stmt::Set(
                accs[r][i],
                mac(p.acc, var(accs[r][i]), var(acts[i]), var(code)),
            ));
        }
    }
    gbody.push(Stmt::For {
        var: k,
        start: add(var(ka), var(lane)),
        end: var(kb),
        step: 32,
        kind: LoopKind::Serial,
        body: kbody,
    });
    for r in 0..rpw {
        for i in 0..tm {
            gbody.push(fold(
                p,
                total[r][i],
                total_ty,
                accs[r][i],
                p.acc,
                &var(rows[i]),
                &var(ns[r]),
                &var(g),
            ));
        }
    }
    out.push(Stmt::For {
        var: g,
        start: g_start,
        end: groups,
        step: 1,
        kind: LoopKind::Serial,
        body: gbody,
    });
    for t in total.iter().flatten() {
        out.push(Stmt::WarpSum(*t));
    }
    let mut stores = Vec::new();
    for r in 0..rpw {
        let mut rs = Vec::new();
        for i in 0..tm {
            let value = if float_out {
                match outer_scale(p, &var(rows[i]), &var(ns[r])) {
                    Some(s) => mul(var(total[r][i]), s),
                    None => var(total[r][i]),
                }
            } else {
                cast(Ty::I32, var(total[r][i]))
            };
            rs.push(Stmt::If {
                cond: cmp(CmpOp::Lt, i64c(i as i64), dim(dm)),
                then: vec![Stmt::Store {
                    buf: p.out,
                    index: add(mul(i64c(i as i64), dim(dn)), var(ns[r])),
                    value,
                }],
            });
        }
        if r == 0 {
            stores.extend(rs);
        } else {
            stores.push(Stmt::If {
                cond: cmp(CmpOp::Lt, add(var(n0), i64c(r as i64)), dim(dn)),
                then: rs,
            });
        }
    }
    out.push(Stmt::If {
        cond: cmp(CmpOp::Eq, var(lane), i64c(0)),
        then: stores,
    });
    out
}

/// One thread per (weight row, tile of `tm` activation rows): the CPU loop nest.
fn generic_body(f: &mut Func, p: &Plan, block: u32, tm: usize) -> Vec<Stmt> {
    let (dm, dn, dk) = (p.m, p.n, p.k);
    let l = p.layout;
    let mut out = Vec::new();
    let t = f.var("t", Ty::I64);
    out.push(Stmt::Let(
        t,
        add(
            mul(
                cast(Ty::I64, Expr::Special(Special::BlockIdx)),
                i64c(block as i64),
            ),
            cast(Ty::I64, Expr::Special(Special::ThreadIdx)),
        ),
    ));
    let mut tb = Vec::new();
    let n = f.var("n", Ty::I64);
    tb.push(Stmt::Let(n, bin(BinOp::Rem, var(t), dim(dn))));
    let m0 = f.var("m0", Ty::I64);
    tb.push(Stmt::Let(m0, mul(div(var(t), dim(dn)), i64c(tm as i64))));
    let wrow = f.var("wrow", Ty::I64);
    tb.push(Stmt::Let(wrow, mul(var(n), row_bytes(&l, dk))));
    let float_out = p.out_elem != Elem::I32;
    let total_ty = if float_out { Ty::F32 } else { p.acc };
    let mut rows = Vec::new();
    let mut arow = Vec::new();
    let mut total = Vec::new();
    for i in 0..tm {
        let r = f.var(format!("row{i}"), Ty::I64);
        tb.push(Stmt::Let(
            r,
            min(add(var(m0), i64c(i as i64)), sub(dim(dm), i64c(1))),
        ));
        let a = f.var(format!("arow{i}"), Ty::I64);
        tb.push(Stmt::Let(a, mul(var(r), dim(dk))));
        let tt = f.var(format!("total{i}"), total_ty);
        tb.push(Stmt::Let(tt, zero(total_ty)));
        rows.push(r);
        arow.push(a);
        total.push(tt);
    }
    let (gsize, groups) = match p.group {
        Some(g) => (i64c(g as i64), ceil_div(dim(dk), g as i64)),
        None => (dim(dk), i64c(1)),
    };
    let g = f.var("g", Ty::I64);
    let mut gb = Vec::new();
    let k0 = f.var("k0", Ty::I64);
    gb.push(Stmt::Let(k0, mul(var(g), gsize.clone())));
    let k1 = f.var("k1", Ty::I64);
    gb.push(Stmt::Let(k1, min(add(var(k0), gsize), dim(dk))));
    let accs: Vec<Var> = (0..tm)
        .map(|i| {
            let v = f.var(format!("acc{i}"), p.acc);
            gb.push(Stmt::Let(v, zero(p.acc)));
            v
        })
        .collect();
    let align = p.group.map(|g| g as usize / l.per_unit());
    let kc_end = f.var("kc_end", Ty::I64);
    match chunk_for(&l, align).filter(|_| {
        p.group
            .is_none_or(|g| (g as usize).is_multiple_of(l.per_unit()))
    }) {
        Some(c) => {
            let cw = c.weights as i64;
            gb.push(Stmt::Let(
                kc_end,
                add(var(k0), mul(div(sub(var(k1), var(k0)), i64c(cw)), i64c(cw))),
            ));
            let kc = f.var("kc", Ty::I64);
            let mut kb = Vec::new();
            let codes = decode_chunk(f, &mut kb, &l, &c, p.weight, var(wrow), var(kc));
            for i in 0..tm {
                kb.push(Stmt::Set(
                    accs[i],
                    Expr::DotRun {
                        buf: p.act,
                        index: Box::new(add(var(arow[i]), var(kc))),
                        codes: codes.clone(),
                        acc: Box::new(var(accs[i])),
                    },
                ));
            }
            gb.push(Stmt::For {
                var: kc,
                start: var(k0),
                end: var(kc_end),
                step: cw,
                kind: LoopKind::Serial,
                body: kb,
            });
        }
        None => gb.push(Stmt::Let(kc_end, var(k0))),
    }
    let k = f.var("k", Ty::I64);
    let mut kb = Vec::new();
    let code = decode_one(f, &mut kb, &l, p.weight, var(wrow), var(k));
    for i in 0..tm {
        let a = load(p.act, add(var(arow[i]), var(k)));
        kb.push(Stmt::Set(accs[i], mac(p.acc, var(accs[i]), a, var(code))));
    }
    gb.push(Stmt::For {
        var: k,
        start: var(kc_end),
        end: var(k1),
        step: 1,
        kind: LoopKind::Serial,
        body: kb,
    });
    for i in 0..tm {
        gb.push(fold(
            p,
            total[i],
            total_ty,
            accs[i],
            p.acc,
            &var(rows[i]),
            &var(n),
            &var(g),
        ));
    }
    tb.push(Stmt::For {
        var: g,
        start: i64c(0),
        end: groups,
        step: 1,
        kind: LoopKind::Serial,
        body: gb,
    });
    for i in 0..tm {
        let value = if float_out {
            match outer_scale(p, &var(rows[i]), &var(n)) {
                Some(s) => mul(var(total[i]), s),
                None => var(total[i]),
            }
        } else {
            cast(Ty::I32, var(total[i]))
        };
        tb.push(Stmt::If {
            cond: cmp(CmpOp::Lt, add(var(m0), i64c(i as i64)), dim(dm)),
            then: vec![Stmt::Store {
                buf: p.out,
                index: add(mul(add(var(m0), i64c(i as i64)), dim(dn)), var(n)),
                value,
            }],
        });
    }
    out.push(Stmt::If {
        cond: cmp(
            CmpOp::Lt,
            var(t),
            mul(dim(dn), ceil_div(dim(dm), tm as i64)),
        ),
        then: tb,
    });
    out
}
