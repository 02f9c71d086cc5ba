//! Host buffers: typed tensor data passed to the interpreter and every backend,
//! their validation against a kernel's dimensions, and seeded random inputs.

use half::{bf16, f16};

use crate::ir::{Dims, ElemType, Kernel, Role, Scalar, ScaleIndex, Tensor};

/// Tensor data on the host. Packed tensors are raw bytes in the layout's order.
#[derive(Clone, Debug, PartialEq)]
pub enum HostBuf {
    I8(Vec<i8>),
    I32(Vec<i32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F32(Vec<f32>),
    Packed(Vec<u8>),
}

impl HostBuf {
    pub fn len(&self) -> usize {
        match self {
            HostBuf::I8(v) => v.len(),
            HostBuf::I32(v) => v.len(),
            HostBuf::F16(v) => v.len(),
            HostBuf::BF16(v) => v.len(),
            HostBuf::F32(v) => v.len(),
            HostBuf::Packed(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            HostBuf::I8(_) => "i8",
            HostBuf::I32(_) => "i32",
            HostBuf::F16(_) => "f16",
            HostBuf::BF16(_) => "bf16",
            HostBuf::F32(_) => "f32",
            HostBuf::Packed(_) => "packed bytes",
        }
    }

    /// Element `i` widened to f64 (packed buffers give the raw byte).
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            HostBuf::I8(v) => v[i] as f64,
            HostBuf::I32(v) => v[i] as f64,
            HostBuf::F16(v) => v[i].to_f64(),
            HostBuf::BF16(v) => v[i].to_f64(),
            HostBuf::F32(v) => v[i] as f64,
            HostBuf::Packed(v) => v[i] as f64,
        }
    }

    /// All elements widened to f64.
    pub fn to_f64(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.get_f64(i)).collect()
    }

    /// Raw little-endian bytes (for safetensors and device copies).
    pub fn as_bytes(&self) -> Vec<u8> {
        match self {
            HostBuf::I8(v) => v.iter().map(|&x| x as u8).collect(),
            HostBuf::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostBuf::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostBuf::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostBuf::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostBuf::Packed(v) => v.clone(),
        }
    }

    /// Whether this buffer's element type is the one `ty` needs.
    pub fn matches(&self, ty: &ElemType) -> bool {
        matches!(
            (self, ty),
            (HostBuf::Packed(_), ElemType::Packed { .. })
                | (HostBuf::I8(_), ElemType::Scalar(Scalar::I8))
                | (HostBuf::I32(_), ElemType::Scalar(Scalar::I32))
                | (HostBuf::F16(_), ElemType::Scalar(Scalar::F16))
                | (HostBuf::BF16(_), ElemType::Scalar(Scalar::BF16))
                | (HostBuf::F32(_), ElemType::Scalar(Scalar::F32))
        )
    }

    /// A zero-filled buffer of `len` elements of `ty`.
    pub fn zeros(ty: &ElemType, len: usize) -> HostBuf {
        match ty {
            ElemType::Packed { .. } => HostBuf::Packed(vec![0; len]),
            ElemType::Scalar(Scalar::I8) => HostBuf::I8(vec![0; len]),
            ElemType::Scalar(Scalar::I32) => HostBuf::I32(vec![0; len]),
            ElemType::Scalar(Scalar::F16) => HostBuf::F16(vec![f16::ZERO; len]),
            ElemType::Scalar(Scalar::BF16) => HostBuf::BF16(vec![bf16::ZERO; len]),
            ElemType::Scalar(Scalar::F32) => HostBuf::F32(vec![0.0; len]),
        }
    }
}

/// A buffer that does not fit its parameter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BufferError {
    #[error("kernel `{kernel}` takes {expected} input buffers, {got} given")]
    Count {
        kernel: String,
        expected: usize,
        got: usize,
    },
    #[error("`{name}` must hold {expected} ({ty}), got {got} ({got_ty})")]
    Type {
        name: String,
        ty: String,
        expected: String,
        got: String,
        got_ty: String,
    },
    #[error("`{name}` {shape} needs {expected} {unit}, the buffer holds {got}")]
    Length {
        name: String,
        shape: String,
        expected: usize,
        got: usize,
        unit: &'static str,
    },
    #[error("invalid dimensions: {0}")]
    Dims(String),
}

/// Checks one buffer against a tensor parameter.
pub fn check_buffer(k: &Kernel, t: &Tensor, dims: &Dims, buf: &HostBuf) -> Result<(), BufferError> {
    if !buf.matches(&t.ty) {
        return Err(BufferError::Type {
            name: t.name.clone(),
            ty: t.ty.name(),
            expected: match &t.ty {
                ElemType::Packed { .. } => "packed bytes".into(),
                ElemType::Scalar(s) => s.name().into(),
            },
            got: buf.type_name().into(),
            got_ty: buf.type_name().into(),
        });
    }
    let expected = k.buffer_len(t, dims);
    if buf.len() != expected {
        return Err(BufferError::Length {
            name: t.name.clone(),
            shape: k.shape_str(t),
            expected,
            got: buf.len(),
            unit: if matches!(t.ty, ElemType::Packed { .. }) {
                "bytes"
            } else {
                "elements"
            },
        });
    }
    Ok(())
}

/// Checks dimensions and every input buffer of a launch.
pub fn check_inputs(k: &Kernel, dims: &Dims, inputs: &[HostBuf]) -> Result<(), BufferError> {
    k.validate_dims(dims).map_err(BufferError::Dims)?;
    if inputs.len() != k.inputs.len() {
        return Err(BufferError::Count {
            kernel: k.name.clone(),
            expected: k.inputs.len(),
            got: inputs.len(),
        });
    }
    for (p, b) in k.inputs.iter().zip(inputs) {
        check_buffer(k, &p.tensor, dims, b)?;
    }
    Ok(())
}

/// SplitMix64: a small, seedable generator so inputs are reproducible everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform integer in `lo..=hi`.
    pub fn range_i32(&mut self, lo: i32, hi: i32) -> i32 {
        let span = (hi as i64 - lo as i64 + 1) as u64;
        (lo as i64 + (self.next_u64() % span) as i64) as i32
    }

    /// Uniform float in `[lo, hi)`.
    pub fn range_f32(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

/// Random codes for a packed `[rows, k]` tensor, every field over its full range.
pub fn random_codes(
    rng: &mut Rng,
    layout: &crate::layout::LayoutDesc,
    rows: usize,
    k: usize,
) -> Vec<i32> {
    let mut out = Vec::with_capacity(rows * k);
    for _ in 0..rows {
        for i in 0..k {
            let f = layout.field_of(i);
            out.push(rng.range_i32(f.min(), f.max()));
        }
    }
    out
}

/// Fresh random inputs for every parameter: full-range i8 activations and codes,
/// activations in [-1, 1), positive scales near 1/64. Never all zeros.
pub fn random_inputs(k: &Kernel, dims: &Dims, seed: u64) -> Vec<HostBuf> {
    let mut rng = Rng::new(seed);
    k.inputs
        .iter()
        .map(|p| {
            let t = &p.tensor;
            let len = k.buffer_len(t, dims);
            let (lo, hi) = match p.role {
                Role::Scale(ScaleIndex::Row | ScaleIndex::RowGroup) => (0.5 / 64.0, 1.5 / 64.0),
                Role::Scale(_) => (0.5 / 16.0, 1.5 / 16.0),
                _ => (-1.0, 1.0),
            };
            match &t.ty {
                ElemType::Packed { layout, .. } => {
                    let rows: usize = t.shape[..t.shape.len() - 1]
                        .iter()
                        .map(|&e| k.extent(e, dims))
                        .product();
                    let kk = k.extent(t.shape[t.shape.len() - 1], dims);
                    let codes = random_codes(&mut rng, layout, rows, kk);
                    // Codes were drawn inside every field's range, so packing cannot fail.
                    HostBuf::Packed(
                        layout
                            .pack(&codes, rows, kk)
                            .unwrap_or_else(|_| vec![0x5a; len]),
                    )
                }
                ElemType::Scalar(Scalar::I8) => {
                    HostBuf::I8((0..len).map(|_| rng.range_i32(-128, 127) as i8).collect())
                }
                ElemType::Scalar(Scalar::I32) => {
                    HostBuf::I32((0..len).map(|_| rng.range_i32(-1000, 1000)).collect())
                }
                ElemType::Scalar(Scalar::F16) => HostBuf::F16(
                    (0..len)
                        .map(|_| f16::from_f32(rng.range_f32(lo, hi)))
                        .collect(),
                ),
                ElemType::Scalar(Scalar::BF16) => HostBuf::BF16(
                    (0..len)
                        .map(|_| bf16::from_f32(rng.range_f32(lo, hi)))
                        .collect(),
                ),
                ElemType::Scalar(Scalar::F32) => {
                    HostBuf::F32((0..len).map(|_| rng.range_f32(lo, hi)).collect())
                }
            }
        })
        .collect()
}
