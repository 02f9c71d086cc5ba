//! Weight quantizer: f32 weights `[N, K]` (row-major) → integer codes and
//! per-group scales (plus zero points for unsigned layouts), packed with any
//! [`LayoutDesc`]; dequantization and error metrics.
//!
//! # Rules
//!
//! * **Groups.** Each row is cut along K into groups of `G` consecutive weights;
//!   group `g` of a row covers `k in g*G .. min((g+1)*G, K)`. When K is not a
//!   multiple of G the last group is *partial* (its scale only sees its own
//!   weights), so scales (and zero points) form an `[N, ceil(K/G)]` row-major
//!   matrix. Group boundaries are global K positions: a group may start on
//!   either field of a pair layout when G is odd.
//! * **Dequantization** is `w ≈ scale[n, k / G] * (code[n, k] - zero[n, k / G])`,
//!   with `zero = 0` for signed layouts. Every field of a unit uses the *same*
//!   step `scale`: a backend multiplies the sign-extended code by the group
//!   scale, whatever field it came from.
//! * **Signed layouts (symmetric).** Allowed when every field is signed and at
//!   least 2 bits wide. Codes are `clamp(round(w / scale), field.min, field.max)`,
//!   where the field is the one that holds position `k` (`k % fields per unit`):
//!   for the 3.5-bit pair, even k uses s4 `[-8, 7]` and odd k uses s3 `[-4, 3]`.
//!   The *absmax* scale is the smallest scale at which no weight of the group
//!   clips, using each field's own range at its own positions and each sign's
//!   own limit: `max over the group of (w / field.max if w > 0, w / field.min if
//!   w < 0)`. For a scalar s4 that is `max(max⁺/7, |min⁻|/8)`; for the pair it is
//!   `absmax/3` when the largest weight sits on an odd (s3) position but may drop
//!   to `absmax/7` when the odd positions are small. With this scale every
//!   weight is within `scale / 2` of its dequantized value.
//! * **Unsigned layouts (asymmetric).** Allowed when every field is unsigned and
//!   all fields have the same width `b` (u4: `qmax = 15`). With
//!   `lo = min(min w, 0)` and `hi = max(max w, 0)` (the range always includes 0,
//!   so 0 is exact): `scale = (hi - lo) / qmax`, `zero = clamp(round(-lo / scale),
//!   0, qmax)` (one `u8` per group), `code = clamp(round(w / scale) + zero, 0,
//!   qmax)`. Every weight is again within `scale / 2`.
//! * **MSE search** (`ScaleSearch::Mse`) tries the clipping ratios
//!   `r = 1.00, 0.99, …, 0.20` per group, scaling the absmax scale (or both ends
//!   of the asymmetric range) by `r`, and keeps the ratio with the least squared
//!   error, computed with the scale exactly as stored. `r = 1` is the absmax
//!   choice and ties keep the larger ratio, so MSE is never worse than absmax.
//! * **Stored scales.** f32 or f16 (`half`). An f16 scale is rounded *up* to the
//!   next representable value, and codes are computed with the stored value,
//!   so rounding never clips a weight; a scale beyond the f16 range is an error.
//!   An all-zero group stores scale 0 (and zero point 0) with all codes 0.
//! * **Padding.** K odd with a pair layout: the last unit's `lo` field is
//!   padding and packs as 0 (see [`crate::pack`]).
//!
//! Why one step for every field rather than a per-field step (e.g. s3 codes
//! meaning `2 * code * scale`, which lowers the pair's MSE by roughly 1 dB on
//! Gaussian weights)? The descriptor carries no per-field multiplier, so every
//! backend would need a rule that the layout does not express; with a single
//! step the kernels stay `code * scale`, the MSE search recovers most of the
//! gap, and the per-position absmax rule above already lets the s4 positions
//! use their wider range.

use half::f16;
use qkc_dsl::layout::LayoutDesc;
use rayon::prelude::*;

use crate::pack::{pack_codes, packed_len, unpack_codes, validate_layout, PackError};

/// The group size used when none is given.
pub const DEFAULT_GROUP: usize = 128;

/// Clipping ratios tried by the MSE search: `1 - i * MSE_RATIO_STEP` for
/// `i in 0..=MSE_STEPS` (1.00 down to 0.20).
pub const MSE_STEPS: usize = 80;
/// Step between two clipping ratios of the MSE search.
pub const MSE_RATIO_STEP: f32 = 0.01;

/// How scales are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ScaleDtype {
    F32,
    #[default]
    F16,
}

impl ScaleDtype {
    /// Bytes of one scale.
    pub const fn bytes(self) -> usize {
        match self {
            ScaleDtype::F32 => 4,
            ScaleDtype::F16 => 2,
        }
    }

    /// `f32` or `f16`.
    pub const fn name(self) -> &'static str {
        match self {
            ScaleDtype::F32 => "f32",
            ScaleDtype::F16 => "f16",
        }
    }
}

/// Per-group scales, `[N, ceil(K/G)]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Scales {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl Scales {
    /// Converts scales that are already representable in `dtype`.
    fn from_f32(values: Vec<f32>, dtype: ScaleDtype) -> Scales {
        match dtype {
            ScaleDtype::F32 => Scales::F32(values),
            ScaleDtype::F16 => Scales::F16(values.into_iter().map(f16::from_f32).collect()),
        }
    }

    pub fn dtype(&self) -> ScaleDtype {
        match self {
            Scales::F32(_) => ScaleDtype::F32,
            Scales::F16(_) => ScaleDtype::F16,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Scales::F32(v) => v.len(),
            Scales::F16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Scale `i` as f32.
    pub fn get(&self, i: usize) -> Option<f32> {
        match self {
            Scales::F32(v) => v.get(i).copied(),
            Scales::F16(v) => v.get(i).map(|h| h.to_f32()),
        }
    }

    /// All scales as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Scales::F32(v) => v.clone(),
            Scales::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
        }
    }

    /// Bytes the scales occupy.
    pub fn byte_len(&self) -> usize {
        self.len() * self.dtype().bytes()
    }

    /// The scales as little-endian bytes (what a safetensors file stores).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Scales::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Scales::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// How a group's scale is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ScaleSearch {
    /// The smallest scale at which nothing clips.
    #[default]
    AbsMax,
    /// The clipping ratio with the least squared error (see the module doc).
    Mse,
}

/// Which quantization a layout gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Every field signed: `w = scale * code`.
    Symmetric,
    /// Every field unsigned, same width: `w = scale * (code - zero)`.
    Asymmetric { qmax: i32 },
}

/// Everything the quantizer needs besides the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantConfig {
    pub layout: LayoutDesc,
    /// Weights per group along K (at least 1).
    pub group: usize,
    pub scale_dtype: ScaleDtype,
    pub search: ScaleSearch,
}

impl QuantConfig {
    /// Group 128, f16 scales, absmax.
    pub fn new(layout: LayoutDesc) -> QuantConfig {
        QuantConfig {
            layout,
            group: DEFAULT_GROUP,
            scale_dtype: ScaleDtype::F16,
            search: ScaleSearch::AbsMax,
        }
    }

    pub fn with_group(self, group: usize) -> QuantConfig {
        QuantConfig { group, ..self }
    }

    pub fn with_scale_dtype(self, scale_dtype: ScaleDtype) -> QuantConfig {
        QuantConfig {
            scale_dtype,
            ..self
        }
    }

    pub fn with_search(self, search: ScaleSearch) -> QuantConfig {
        QuantConfig { search, ..self }
    }
}

/// Why a tensor could not be quantized or dequantized.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum QuantError {
    #[error("the group size must be at least 1")]
    ZeroGroup,
    #[error("a [{n}, {k}] tensor has {expected} elements, got {got}")]
    Shape {
        n: usize,
        k: usize,
        expected: usize,
        got: usize,
    },
    #[error("a [{n}, {k}] tensor is too large to address")]
    TooLarge { n: usize, k: usize },
    #[error("weight [{row}, {col}] is {value}; only finite weights can be quantized")]
    NonFinite { row: usize, col: usize, value: f32 },
    #[error("layout `{layout}` can't be quantized: {reason}")]
    UnsupportedLayout {
        layout: String,
        reason: &'static str,
    },
    #[error(
        "row {row}, group {group}: weights up to {absmax:e} need a scale beyond the {dtype} range"
    )]
    ScaleOverflow {
        row: usize,
        group: usize,
        absmax: f32,
        dtype: &'static str,
    },
    #[error("{what} has {got} entries, expected {expected}")]
    BufferLen {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error(transparent)]
    Pack(#[from] PackError),
}

/// Decides how `layout` is quantized (see the module doc).
pub fn scheme_of(layout: &LayoutDesc) -> Result<Scheme, QuantError> {
    validate_layout(layout).map_err(PackError::from)?;
    let fields = layout.fields();
    let unsupported = |reason| QuantError::UnsupportedLayout {
        layout: layout.describe(),
        reason,
    };
    if fields.iter().all(|f| f.signed) {
        if fields.iter().any(|f| f.bits < 2) {
            return Err(unsupported(
                "a signed 1-bit field has no positive code to scale",
            ));
        }
        Ok(Scheme::Symmetric)
    } else if fields.iter().all(|f| !f.signed) {
        let bits = fields[0].bits;
        if fields.iter().any(|f| f.bits != bits) {
            return Err(unsupported(
                "unsigned fields of different widths can't share a zero point",
            ));
        }
        Ok(Scheme::Asymmetric {
            qmax: fields[0].max(),
        })
    } else {
        Err(unsupported("fields mix signed and unsigned codes"))
    }
}

/// Unpacked quantizer output.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedCodes {
    /// `[N, K]` row-major codes, each in its field's range.
    pub codes: Vec<i32>,
    /// `[N, ceil(K/G)]` scales.
    pub scales: Scales,
    /// `[N, ceil(K/G)]` zero points, for unsigned layouts only.
    pub zeros: Option<Vec<u8>>,
}

/// A quantized, packed `[N, K]` weight tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedTensor {
    pub layout: LayoutDesc,
    pub n: usize,
    pub k: usize,
    pub group: usize,
    /// `N` rows of `layout.row_bytes(K)` bytes.
    pub codes_packed: Vec<u8>,
    /// `[N, ceil(K/G)]` scales.
    pub scales: Scales,
    /// `[N, ceil(K/G)]` zero points (unsigned layouts only).
    pub zeros: Option<Vec<u8>>,
}

impl QuantizedTensor {
    /// Groups per row: `ceil(K/G)` (0 for a zero group size).
    pub fn groups_per_row(&self) -> usize {
        if self.group == 0 {
            0
        } else {
            self.k.div_ceil(self.group)
        }
    }

    /// Bits per weight from the actual buffers: packed codes, scales and zero
    /// points, all counted, over `N * K` weights (0 for an empty tensor).
    pub fn bits_per_weight(&self) -> f64 {
        let weights = self.n.saturating_mul(self.k);
        if weights == 0 {
            return 0.0;
        }
        let bytes = self.codes_packed.len()
            + self.scales.byte_len()
            + self.zeros.as_ref().map_or(0, Vec::len);
        (bytes * 8) as f64 / weights as f64
    }

    /// Checks that every buffer has the length the shape and layout imply.
    pub fn validate(&self) -> Result<(), QuantError> {
        if self.group == 0 {
            return Err(QuantError::ZeroGroup);
        }
        let expected = packed_len(&self.layout, self.n, self.k)?;
        check_len("codes_packed", expected, self.codes_packed.len())?;
        let groups = self.n * self.groups_per_row();
        check_len("scales", groups, self.scales.len())?;
        match (scheme_of(&self.layout)?, &self.zeros) {
            (Scheme::Symmetric, None) => Ok(()),
            (Scheme::Asymmetric { .. }, Some(z)) => check_len("zeros", groups, z.len()),
            (Scheme::Symmetric, Some(z)) => check_len("zeros", 0, z.len()),
            (Scheme::Asymmetric { .. }, None) => check_len("zeros", groups, 0),
        }
    }

    /// The unpacked `[N, K]` codes.
    pub fn codes(&self) -> Result<Vec<i32>, QuantError> {
        self.validate()?;
        Ok(unpack_codes(
            &self.layout,
            &self.codes_packed,
            self.n,
            self.k,
        )?)
    }

    /// The dequantized `[N, K]` weights.
    pub fn dequantize(&self) -> Result<Vec<f32>, QuantError> {
        let codes = self.codes()?;
        dequantize_codes(
            &codes,
            self.n,
            self.k,
            self.group,
            &self.scales,
            self.zeros.as_deref(),
        )
    }
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), QuantError> {
    if expected == got {
        Ok(())
    } else {
        Err(QuantError::BufferLen {
            what,
            expected,
            got,
        })
    }
}

/// Quantizes `[n, k]` row-major weights and packs the codes.
pub fn quantize(
    weights: &[f32],
    n: usize,
    k: usize,
    cfg: &QuantConfig,
) -> Result<QuantizedTensor, QuantError> {
    let q = quantize_codes(weights, n, k, cfg)?;
    let codes_packed = pack_codes(&cfg.layout, &q.codes, n, k)?;
    Ok(QuantizedTensor {
        layout: cfg.layout,
        n,
        k,
        group: cfg.group,
        codes_packed,
        scales: q.scales,
        zeros: q.zeros,
    })
}

/// Quantizes `[n, k]` row-major weights without packing (rows in parallel).
pub fn quantize_codes(
    weights: &[f32],
    n: usize,
    k: usize,
    cfg: &QuantConfig,
) -> Result<QuantizedCodes, QuantError> {
    if cfg.group == 0 {
        return Err(QuantError::ZeroGroup);
    }
    let scheme = scheme_of(&cfg.layout)?;
    let len = n.checked_mul(k).ok_or(QuantError::TooLarge { n, k })?;
    if weights.len() != len {
        return Err(QuantError::Shape {
            n,
            k,
            expected: len,
            got: weights.len(),
        });
    }
    if let Some(i) = weights.iter().position(|w| !w.is_finite()) {
        return Err(QuantError::NonFinite {
            row: i / k,
            col: i % k,
            value: weights[i],
        });
    }
    let gpr = k.div_ceil(cfg.group);
    let mut codes = vec![0i32; len];
    let mut scales = vec![0f32; n * gpr];
    let mut zeros = vec![0u8; n * gpr];
    if len > 0 {
        weights
            .par_chunks(k)
            .zip(codes.par_chunks_mut(k))
            .zip(scales.par_chunks_mut(gpr))
            .zip(zeros.par_chunks_mut(gpr))
            .enumerate()
            .try_for_each(|(row, (((w, c), s), z))| {
                for g in 0..gpr {
                    let a = g * cfg.group;
                    let b = (a + cfg.group).min(k);
                    let p = quantize_group(&w[a..b], a, cfg, scheme, &mut c[a..b]).ok_or(
                        QuantError::ScaleOverflow {
                            row,
                            group: g,
                            absmax: group_absmax(&w[a..b]),
                            dtype: cfg.scale_dtype.name(),
                        },
                    )?;
                    s[g] = p.scale;
                    z[g] = p.zero;
                }
                Ok::<(), QuantError>(())
            })?;
    }
    Ok(QuantizedCodes {
        codes,
        scales: Scales::from_f32(scales, cfg.scale_dtype),
        zeros: match scheme {
            Scheme::Symmetric => None,
            Scheme::Asymmetric { .. } => Some(zeros),
        },
    })
}

fn group_absmax(w: &[f32]) -> f32 {
    w.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// A group's stored parameters.
struct GroupParams {
    scale: f32,
    zero: u8,
}

/// Rounds a positive scale to its stored value, upwards for f16 so that the
/// stored step never clips more than the exact one. `None` if it overflows.
fn store_scale(s: f32, dtype: ScaleDtype) -> Option<f32> {
    let stored = match dtype {
        ScaleDtype::F32 => s,
        ScaleDtype::F16 => {
            let h = f16::from_f32(s);
            let h = if h.to_f32() < s {
                f16::from_bits(h.to_bits() + 1)
            } else {
                h
            };
            h.to_f32()
        }
    };
    stored.is_finite().then_some(stored)
}

/// The clipping ratios to try.
fn ratios(search: ScaleSearch) -> impl Iterator<Item = f32> {
    let steps = match search {
        ScaleSearch::AbsMax => 0,
        ScaleSearch::Mse => MSE_STEPS,
    };
    (0..=steps).map(|i| 1.0 - i as f32 * MSE_RATIO_STEP)
}

/// Quantizes one group whose first weight sits at row position `start`.
/// `None` when the scale overflows its storage type.
fn quantize_group(
    w: &[f32],
    start: usize,
    cfg: &QuantConfig,
    scheme: Scheme,
    codes: &mut [i32],
) -> Option<GroupParams> {
    match scheme {
        Scheme::Symmetric => quantize_group_symmetric(w, start, cfg, codes),
        Scheme::Asymmetric { qmax } => quantize_group_asymmetric(w, qmax, cfg, codes),
    }
}

fn quantize_group_symmetric(
    w: &[f32],
    start: usize,
    cfg: &QuantConfig,
    codes: &mut [i32],
) -> Option<GroupParams> {
    let layout = &cfg.layout;
    let per = layout.per_unit();
    let range = |i: usize| {
        let f = &layout.fields[(start + i) % per];
        (f.min() as f32, f.max() as f32)
    };
    let s_abs = w.iter().enumerate().fold(0f32, |s, (i, &x)| {
        let (lo, hi) = range(i);
        let need = if x > 0.0 {
            x / hi
        } else if x < 0.0 {
            x / lo
        } else {
            0.0
        };
        s.max(need)
    });
    if s_abs == 0.0 {
        codes.iter_mut().for_each(|c| *c = 0);
        return Some(GroupParams {
            scale: 0.0,
            zero: 0,
        });
    }
    let code = |i: usize, x: f32, s: f32| {
        let (lo, hi) = range(i);
        (x / s).round().clamp(lo, hi)
    };
    let sq_err = |s: f32| -> f64 {
        w.iter()
            .enumerate()
            .map(|(i, &x)| {
                let d = x as f64 - (code(i, x, s) * s) as f64;
                d * d
            })
            .sum()
    };
    let mut best: Option<(f32, f64)> = None;
    for r in ratios(cfg.search) {
        let s = store_scale(r * s_abs, cfg.scale_dtype);
        let s = match (s, best) {
            (None, None) => return None,
            (None, Some(_)) => continue,
            (Some(s), _) if s <= 0.0 => continue,
            (Some(s), _) => s,
        };
        let e = sq_err(s);
        if best.is_none_or(|(_, be)| e < be) {
            best = Some((s, e));
        }
    }
    let (s, _) = best?;
    for (i, (c, &x)) in codes.iter_mut().zip(w).enumerate() {
        *c = code(i, x, s) as i32;
    }
    Some(GroupParams { scale: s, zero: 0 })
}

fn quantize_group_asymmetric(
    w: &[f32],
    qmax: i32,
    cfg: &QuantConfig,
    codes: &mut [i32],
) -> Option<GroupParams> {
    let lo = w.iter().fold(0f32, |m, &x| m.min(x));
    let hi = w.iter().fold(0f32, |m, &x| m.max(x));
    if hi - lo == 0.0 {
        codes.iter_mut().for_each(|c| *c = 0);
        return Some(GroupParams {
            scale: 0.0,
            zero: 0,
        });
    }
    let qmax_f = qmax as f32;
    let code = |x: f32, s: f32, z: i32| ((x / s).round() as i32 + z).clamp(0, qmax);
    let sq_err = |s: f32, z: i32| -> f64 {
        w.iter()
            .map(|&x| {
                let d = x as f64 - ((code(x, s, z) - z) as f32 * s) as f64;
                d * d
            })
            .sum()
    };
    let mut best: Option<(f32, i32, f64)> = None;
    for r in ratios(cfg.search) {
        let s = store_scale(r * (hi - lo) / qmax_f, cfg.scale_dtype);
        let s = match (s, best) {
            (None, None) => return None,
            (None, Some(_)) => continue,
            (Some(s), _) if s <= 0.0 => continue,
            (Some(s), _) => s,
        };
        let z = ((-r * lo) / s).round().clamp(0.0, qmax_f) as i32;
        let e = sq_err(s, z);
        if best.is_none_or(|(_, _, be)| e < be) {
            best = Some((s, z, e));
        }
    }
    let (s, z, _) = best?;
    for (c, &x) in codes.iter_mut().zip(w) {
        *c = code(x, s, z);
    }
    Some(GroupParams {
        scale: s,
        zero: u8::try_from(z).ok()?,
    })
}

/// Dequantizes `[n, k]` codes: `scale[n, k/G] * (code - zero[n, k/G])`.
pub fn dequantize_codes(
    codes: &[i32],
    n: usize,
    k: usize,
    group: usize,
    scales: &Scales,
    zeros: Option<&[u8]>,
) -> Result<Vec<f32>, QuantError> {
    if group == 0 {
        return Err(QuantError::ZeroGroup);
    }
    let len = n.checked_mul(k).ok_or(QuantError::TooLarge { n, k })?;
    check_len("codes", len, codes.len())?;
    let gpr = k.div_ceil(group);
    check_len("scales", n * gpr, scales.len())?;
    if let Some(z) = zeros {
        check_len("zeros", n * gpr, z.len())?;
    }
    let scales = scales.to_f32();
    Ok(codes
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let g = (i / k) * gpr + (i % k) / group;
            let z = zeros.map_or(0, |z| z[g] as i32);
            (c - z) as f32 * scales[g]
        })
        .collect())
}

/// How far an approximation is from the reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorMetrics {
    /// Root mean squared error.
    pub rmse: f64,
    /// `10 log10(Σ ref² / Σ err²)` in dB: `+inf` for an exact match, `-inf` when
    /// the reference is all zeros but the approximation is not.
    pub snr_db: f64,
    /// Largest absolute error.
    pub max_abs: f64,
}

/// Compares an approximation with its reference, element by element.
pub fn error_metrics(reference: &[f32], approx: &[f32]) -> Result<ErrorMetrics, QuantError> {
    check_len("approximation", reference.len(), approx.len())?;
    let (mut signal, mut noise, mut max_abs) = (0f64, 0f64, 0f64);
    for (&r, &a) in reference.iter().zip(approx) {
        let d = r as f64 - a as f64;
        signal += r as f64 * r as f64;
        noise += d * d;
        max_abs = max_abs.max(d.abs());
    }
    let rmse = if reference.is_empty() {
        0.0
    } else {
        (noise / reference.len() as f64).sqrt()
    };
    let snr_db = if noise == 0.0 {
        f64::INFINITY
    } else if signal == 0.0 {
        f64::NEG_INFINITY
    } else {
        10.0 * (signal / noise).log10()
    };
    Ok(ErrorMetrics {
        rmse,
        snr_db,
        max_abs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use qkc_dsl::layout::{builtin, FieldDesc, Storage, BUILTIN_NAMES, Q3P5_BYTE, Q3P5_STREAM};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn layout(name: &str) -> LayoutDesc {
        match builtin(name) {
            Some(l) => l,
            None => panic!("no built-in layout `{name}`"),
        }
    }

    /// Built-ins plus the byte-storage 3.5-bit layout (already built in) and
    /// a byte-storage u4.
    fn layouts() -> Vec<LayoutDesc> {
        let mut v: Vec<LayoutDesc> = BUILTIN_NAMES.iter().map(|n| layout(n)).collect();
        v.push(LayoutDesc::scalar(false, 4, Storage::Byte));
        v
    }

    /// Roughly Gaussian weights (sum of uniforms) with a few outliers.
    fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let g: f32 = (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>() * 1.7;
                if i % 97 == 13 {
                    g * 6.0
                } else {
                    g
                }
            })
            .collect()
    }

    fn per_group_sq_err(w: &[f32], d: &[f32], k: usize, group: usize) -> Vec<f64> {
        let gpr = k.div_ceil(group);
        let mut out = vec![0f64; (w.len() / k) * gpr];
        for (i, (&a, &b)) in w.iter().zip(d).enumerate() {
            let e = a as f64 - b as f64;
            out[(i / k) * gpr + (i % k) / group] += e * e;
        }
        out
    }

    fn check_half_step(w: &[f32], n: usize, k: usize, cfg: &QuantConfig) {
        let q = quantize(w, n, k, cfg).unwrap();
        q.validate().unwrap();
        let d = q.dequantize().unwrap();
        let gpr = k.div_ceil(cfg.group);
        assert_eq!(q.scales.len(), n * gpr);
        for (i, (&a, &b)) in w.iter().zip(&d).enumerate() {
            let g = (i / k) * gpr + (i % k) / cfg.group;
            let s = q.scales.get(g).unwrap();
            let err = (a as f64 - b as f64).abs();
            let bound = s as f64 * 0.5 * (1.0 + 1e-5) + 1e-7 * (a as f64).abs();
            assert!(
                err <= bound,
                "{} k={k} G={}: w[{i}]={a} -> {b}, error {err} > scale/2 = {}",
                cfg.layout,
                cfg.group,
                s / 2.0
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn absmax_error_is_at_most_half_a_step(
            (n, k, group, li, f16s, w) in (1usize..=3, 1usize..=150, 1usize..=130, 0usize..8, any::<bool>())
                .prop_flat_map(|(n, k, g, li, f)| {
                    (Just(n), Just(k), Just(g), Just(li), Just(f),
                     prop::collection::vec(-40.0f32..40.0, n * k))
                })
        ) {
            prop_assume!(w.iter().any(|x| *x != 0.0));
            let cfg = QuantConfig::new(layouts()[li])
                .with_group(group)
                .with_scale_dtype(if f16s { ScaleDtype::F16 } else { ScaleDtype::F32 });
            check_half_step(&w, n, k, &cfg);
        }
    }

    #[test]
    fn half_step_on_gaussian_data_every_layout() {
        for l in layouts() {
            for (k, group) in [(256, 128), (300, 128), (301, 64), (77, 7), (5, 128)] {
                let w = gaussian(3 * k, k as u64);
                for dtype in [ScaleDtype::F16, ScaleDtype::F32] {
                    let cfg = QuantConfig::new(l)
                        .with_group(group)
                        .with_scale_dtype(dtype);
                    check_half_step(&w, 3, k, &cfg);
                }
            }
        }
    }

    #[test]
    fn q3p5_stream_is_0_4375_bytes_and_3_625_bits_per_weight() {
        let (n, k) = (64, 4096);
        let w = gaussian(n * k, 7);
        let q = quantize(&w, n, k, &QuantConfig::new(Q3P5_STREAM).with_group(128)).unwrap();
        assert_eq!(q.codes_packed.len(), n * 1792);
        assert_eq!(q.codes_packed.len() as f64 / (n * k) as f64, 0.4375);
        assert_eq!(q.scales.dtype(), ScaleDtype::F16);
        assert_eq!(q.scales.byte_len(), n * 32 * 2);
        assert_eq!(q.zeros, None);
        assert_eq!(q.bits_per_weight(), 3.625);
        // The byte storage spends 4 bits per weight on codes instead of 3.5.
        let b = quantize(&w, n, k, &QuantConfig::new(Q3P5_BYTE).with_group(128)).unwrap();
        assert_eq!(b.bits_per_weight(), 4.125);
        // Same codes, different packing.
        assert_eq!(b.codes().unwrap(), q.codes().unwrap());
        // u4 pays one zero-point byte per group on top: 4 + 0.125 + 0.0625.
        let u = quantize(&w, n, k, &QuantConfig::new(layout("u4"))).unwrap();
        assert_eq!(u.bits_per_weight(), 4.1875);
    }

    #[test]
    fn mse_search_is_never_worse_than_absmax() {
        for l in layouts() {
            for (k, group) in [(512, 128), (300, 64), (129, 32)] {
                let w = gaussian(4 * k, 11 + k as u64);
                for dtype in [ScaleDtype::F16, ScaleDtype::F32] {
                    let base = QuantConfig::new(l)
                        .with_group(group)
                        .with_scale_dtype(dtype);
                    let a = quantize(&w, 4, k, &base).unwrap().dequantize().unwrap();
                    let m = quantize(&w, 4, k, &base.with_search(ScaleSearch::Mse))
                        .unwrap()
                        .dequantize()
                        .unwrap();
                    let ea = per_group_sq_err(&w, &a, k, group);
                    let em = per_group_sq_err(&w, &m, k, group);
                    for (g, (x, y)) in ea.iter().zip(&em).enumerate() {
                        assert!(y <= x, "{l} group {g}: mse {y} > absmax {x}");
                    }
                    // On data with outliers, clipping pays off for narrow codes.
                    if l == layout("s3") || l == Q3P5_STREAM {
                        let (sa, sm) = (
                            error_metrics(&w, &a).unwrap().snr_db,
                            error_metrics(&w, &m).unwrap().snr_db,
                        );
                        assert!(sm > sa + 0.5, "{l}: mse {sm} dB vs absmax {sa} dB");
                    }
                }
            }
        }
    }

    #[test]
    fn snr_orders_s3_below_q3p5_below_s4() {
        let (n, k) = (16, 1024);
        let w = gaussian(n * k, 3);
        let snr = |l: LayoutDesc| {
            let cfg = QuantConfig::new(l).with_search(ScaleSearch::Mse);
            let d = quantize(&w, n, k, &cfg).unwrap().dequantize().unwrap();
            error_metrics(&w, &d).unwrap().snr_db
        };
        let (s3, q, s4) = (snr(layout("s3")), snr(Q3P5_STREAM), snr(layout("s4")));
        assert!(s3 < q && q < s4, "s3 {s3} dB, q3p5 {q} dB, s4 {s4} dB");
    }

    #[test]
    fn partial_last_group_has_its_own_scale() {
        // K = 300, G = 128: groups of 128, 128 and 44; the last one is tiny.
        let (n, k, group) = (2, 300, 128);
        let w: Vec<f32> = (0..n * k)
            .map(|i| {
                let x = ((i * 37 % 23) as f32 - 11.0) / 11.0;
                if i % k >= 256 {
                    x * 0.01
                } else {
                    x
                }
            })
            .collect();
        let cfg = QuantConfig::new(layout("s4"))
            .with_group(group)
            .with_scale_dtype(ScaleDtype::F32);
        let q = quantize(&w, n, k, &cfg).unwrap();
        assert_eq!(q.groups_per_row(), 3);
        assert_eq!(q.scales.len(), n * 3);
        for row in 0..n {
            let s = |g: usize| q.scales.get(row * 3 + g).unwrap();
            let last = &w[row * k + 256..row * k + 300];
            let max = last.iter().fold(0f32, |m, x| m.max(*x));
            let min = last.iter().fold(0f32, |m, x| m.min(*x));
            assert_eq!(s(2), (max / 7.0).max(min / -8.0));
            assert!(s(2) < s(0) / 50.0);
        }
    }

    #[test]
    fn pair_scale_uses_each_fields_own_range() {
        let cfg = QuantConfig::new(Q3P5_BYTE)
            .with_group(4)
            .with_scale_dtype(ScaleDtype::F32);
        // Largest weight on an even (s4) position: scale = 7/7 = 1, codes up to 7.
        let q = quantize_codes(&[7.0, 1.0, -8.0, -2.0], 1, 4, &cfg).unwrap();
        assert_eq!(q.scales, Scales::F32(vec![1.0]));
        assert_eq!(q.codes, vec![7, 1, -8, -2]);
        // Largest weight on an odd (s3) position: 6/3 = 2 wins over 7/7.
        let q = quantize_codes(&[7.0, 6.0, 0.0, -8.0], 1, 4, &cfg).unwrap();
        assert_eq!(q.scales, Scales::F32(vec![2.0]));
        assert_eq!(q.codes, vec![4, 3, 0, -4]);
        // Negative extremes use -8 / -4: -8/-4 = 2.
        let q = quantize_codes(&[1.0, -8.0, 3.0, 0.5], 1, 4, &cfg).unwrap();
        assert_eq!(q.scales, Scales::F32(vec![2.0]));
        assert_eq!(q.codes, vec![1, -4, 2, 0]);
    }

    #[test]
    fn odd_k_pair_pads_the_last_lo_with_zero() {
        let (n, k) = (3, 129);
        let w = gaussian(n * k, 5);
        for l in [Q3P5_STREAM, Q3P5_BYTE] {
            let q = quantize(&w, n, k, &QuantConfig::new(l).with_group(32)).unwrap();
            let rb = l.row_bytes(k);
            assert_eq!(q.codes_packed.len(), n * rb);
            for row in 0..n {
                let bytes = &q.codes_packed[row * rb..(row + 1) * rb];
                let unit = l.read_unit(bytes, 64);
                assert_eq!(l.fields[1].extract(unit), 0, "{l} row {row}: padding lo");
                assert_eq!(l.fields[0].extract(unit), q.codes().unwrap()[row * k + 128]);
            }
            if l.storage == Storage::Stream {
                // 65 units * 7 = 455 bits: the last byte's top bit is unused.
                assert_eq!(rb, 57);
                for row in 0..n {
                    assert_eq!(q.codes_packed[row * rb + rb - 1] >> 7, 0);
                }
            }
        }
    }

    #[test]
    fn u4_uses_a_zero_point() {
        let cfg = QuantConfig::new(layout("u4"))
            .with_group(4)
            .with_scale_dtype(ScaleDtype::F32);
        // Range [-3, 12]: scale 1, zero 3.
        let q = quantize_codes(&[-3.0, 0.0, 5.0, 12.0], 1, 4, &cfg).unwrap();
        assert_eq!(q.scales, Scales::F32(vec![1.0]));
        assert_eq!(q.zeros, Some(vec![3]));
        assert_eq!(q.codes, vec![0, 3, 8, 15]);
        // All positive: the range is stretched to 0, zero point 0.
        let q = quantize_codes(&[15.0, 30.0, 7.5, 22.5], 1, 4, &cfg).unwrap();
        assert_eq!(q.scales, Scales::F32(vec![2.0]));
        assert_eq!(q.zeros, Some(vec![0]));
        assert_eq!(q.codes, vec![8, 15, 4, 11]);
        let d = dequantize_codes(&q.codes, 1, 4, 4, &q.scales, q.zeros.as_deref()).unwrap();
        assert_eq!(d, vec![16.0, 30.0, 8.0, 22.0]);
    }

    #[test]
    fn f16_scales_round_up_and_overflow_is_an_error() {
        // 1/3 is not an f16: the stored scale is the next f16 above it.
        let cfg = QuantConfig::new(layout("s4")).with_group(2);
        let q = quantize_codes(&[7.0 / 3.0, -1.0], 1, 2, &cfg).unwrap();
        let s = q.scales.get(0).unwrap();
        assert!((1.0 / 3.0..1.0 / 3.0 + 1e-3).contains(&s), "{s}");
        assert_eq!(q.codes[0], 7);
        let big = [1.0e9f32, -3.0];
        assert!(matches!(
            quantize(&big, 1, 2, &cfg),
            Err(QuantError::ScaleOverflow {
                row: 0,
                group: 0,
                dtype: "f16",
                ..
            })
        ));
        assert!(quantize(&big, 1, 2, &cfg.with_scale_dtype(ScaleDtype::F32)).is_ok());
    }

    #[test]
    fn all_zero_group_has_zero_scale() {
        let cfg = QuantConfig::new(Q3P5_STREAM).with_group(2);
        let q = quantize(&[0.0, 0.0, 1.5, -0.5], 1, 4, &cfg).unwrap();
        assert_eq!(q.scales.get(0), Some(0.0));
        assert!(q.scales.get(1).unwrap() > 0.0);
        assert_eq!(q.dequantize().unwrap()[..2], [0.0, 0.0]);
    }

    #[test]
    fn errors() {
        let cfg = QuantConfig::new(Q3P5_STREAM);
        assert_eq!(
            quantize(&[1.0; 4], 1, 4, &cfg.with_group(0)),
            Err(QuantError::ZeroGroup)
        );
        assert!(matches!(
            quantize(&[1.0; 3], 1, 4, &cfg),
            Err(QuantError::Shape {
                expected: 4,
                got: 3,
                ..
            })
        ));
        assert!(matches!(
            quantize(&[1.0, 2.0, f32::NAN, 0.5], 2, 2, &cfg),
            Err(QuantError::NonFinite { row: 1, col: 0, .. })
        ));
        let mixed = LayoutDesc::pair((true, 4), (false, 3), Storage::Stream);
        assert!(matches!(
            quantize(&[1.0, 2.0], 1, 2, &QuantConfig::new(mixed)),
            Err(QuantError::UnsupportedLayout { .. })
        ));
        let s1 = LayoutDesc::scalar(true, 1, Storage::Stream);
        assert!(matches!(
            scheme_of(&s1),
            Err(QuantError::UnsupportedLayout { .. })
        ));
        let uneven = LayoutDesc::pair((false, 4), (false, 3), Storage::Byte);
        assert!(matches!(
            scheme_of(&uneven),
            Err(QuantError::UnsupportedLayout { .. })
        ));
        let broken = LayoutDesc {
            fields: [FieldDesc {
                signed: true,
                bits: 9,
                shift: 0,
            }; 4],
            ..Q3P5_STREAM
        };
        assert!(matches!(scheme_of(&broken), Err(QuantError::Pack(_))));
        let mut q = quantize(&[1.0, -2.0, 0.5, 0.25], 1, 4, &cfg).unwrap();
        q.codes_packed.pop();
        assert!(matches!(
            q.dequantize(),
            Err(QuantError::Pack(PackError::PackedLen { .. })) | Err(QuantError::BufferLen { .. })
        ));
    }

    #[test]
    fn error_metrics_by_hand() {
        let m = error_metrics(&[3.0, -4.0], &[3.0, -3.0]).unwrap();
        assert!((m.rmse - (0.5f64).sqrt()).abs() < 1e-12);
        assert!((m.snr_db - 10.0 * 25f64.log10()).abs() < 1e-12);
        assert_eq!(m.max_abs, 1.0);
        assert_eq!(error_metrics(&[1.0], &[1.0]).unwrap().snr_db, f64::INFINITY);
        assert!(error_metrics(&[1.0], &[]).is_err());
    }

    #[test]
    fn empty_tensors_are_fine() {
        let q = quantize(&[], 0, 16, &QuantConfig::new(Q3P5_STREAM)).unwrap();
        assert!(q.codes_packed.is_empty() && q.scales.is_empty());
        assert_eq!(q.bits_per_weight(), 0.0);
        assert_eq!(q.dequantize().unwrap(), Vec::<f32>::new());
    }
}
