//! Reference interpreter: evaluates a checked kernel on host buffers with exact
//! arithmetic (i64 integer sums, f64 float products), independent of every backend.
//!
//! It follows the IR's definition literally:
//! `y[m, n] = Π(row/col scales) · Σ_g Π(group scales of g) · Σ_{k ∈ g} a[m, k] · w[n, k]`,
//! with the inner sum exact in i64 for i8 activations and in f64 otherwise.
//! The result is rounded once, to the output type (round to nearest even).

use half::{bf16, f16};

use crate::host::{check_inputs, BufferError, HostBuf};
use crate::ir::{Dims, ElemType, Kernel, Scalar, ScaleIndex};

/// Evaluates `k` for `dims` on `inputs` (in parameter order); returns the output.
pub fn run(k: &Kernel, dims: &Dims, inputs: &[HostBuf]) -> Result<HostBuf, BufferError> {
    let vals = run_f64(k, dims, inputs)?;
    Ok(match k.out_ty() {
        Scalar::F32 => HostBuf::F32(vals.iter().map(|&v| v as f32).collect()),
        Scalar::F16 => HostBuf::F16(vals.iter().map(|&v| f16::from_f64(v)).collect()),
        Scalar::BF16 => HostBuf::BF16(vals.iter().map(|&v| bf16::from_f64(v)).collect()),
        Scalar::I32 | Scalar::I8 => HostBuf::I32(vals.iter().map(|&v| v as i32).collect()),
    })
}

/// Like [`run`] but returns the unrounded f64 results (for error budgets).
pub fn run_f64(k: &Kernel, dims: &Dims, inputs: &[HostBuf]) -> Result<Vec<f64>, BufferError> {
    check_inputs(k, dims, inputs)?;
    let m_n = dims.values[k.m] as usize;
    let n_n = dims.values[k.n] as usize;
    let k_n = dims.values[k.k] as usize;
    let g = k.group.map(|g| g as usize).unwrap_or(k_n);
    let groups = k_n.div_ceil(g);
    let layout = k.weight_layout();
    let row_bytes = layout.row_bytes(k_n);
    let act = &inputs[k.act];
    let w_bytes: Vec<u8> = match &inputs[k.weight] {
        HostBuf::Packed(b) => b.clone(),
        HostBuf::I8(v) => v.iter().map(|&x| x as u8).collect(),
        other => other.as_bytes(),
    };
    // Decode every weight once: codes[n * K + k].
    let mut codes = vec![0i64; n_n * k_n];
    for n in 0..n_n {
        let row = &w_bytes[n * row_bytes..(n + 1) * row_bytes];
        for kk in 0..k_n {
            codes[n * k_n + kk] = layout.decode(row, kk) as i64;
        }
    }
    let int = k.is_int();
    let a_int: Vec<i64> = if int {
        match act {
            HostBuf::I8(v) => v.iter().map(|&x| x as i64).collect(),
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let a_f: Vec<f64> = if int { Vec::new() } else { act.to_f64() };
    let scales: Vec<(ScaleIndex, Vec<f64>)> =
        k.scales().map(|(i, s)| (s, inputs[i].to_f64())).collect();
    let mut out = vec![0f64; m_n * n_n];
    for m in 0..m_n {
        for n in 0..n_n {
            let mut total = 0f64;
            for gi in 0..groups {
                let k0 = gi * g;
                let k1 = (k0 + g).min(k_n);
                let partial = if int {
                    let mut s = 0i64;
                    for kk in k0..k1 {
                        s += a_int[m * k_n + kk] * codes[n * k_n + kk];
                    }
                    s as f64
                } else {
                    let mut s = 0f64;
                    for kk in k0..k1 {
                        s += a_f[m * k_n + kk] * codes[n * k_n + kk] as f64;
                    }
                    s
                };
                let mut gs = 1f64;
                for (si, v) in &scales {
                    match si {
                        ScaleIndex::RowGroup => gs *= v[m * groups + gi],
                        ScaleIndex::ColGroup => gs *= v[n * groups + gi],
                        _ => {}
                    }
                }
                total += gs * partial;
            }
            for (si, v) in &scales {
                match si {
                    ScaleIndex::Row => total *= v[m],
                    ScaleIndex::Col => total *= v[n],
                    _ => {}
                }
            }
            out[m * n_n + n] = total;
        }
    }
    Ok(out)
}

/// Sum of |terms| of each output: the scale against which float errors are judged.
pub fn magnitude(k: &Kernel, dims: &Dims, inputs: &[HostBuf]) -> Result<Vec<f64>, BufferError> {
    let abs: Vec<HostBuf> = inputs
        .iter()
        .zip(&k.inputs)
        .map(|(b, p)| match (b, &p.tensor.ty) {
            (HostBuf::Packed(_), _) | (_, ElemType::Packed { .. }) => b.clone(),
            (HostBuf::I8(v), _) => HostBuf::I8(v.iter().map(|x| x.saturating_abs()).collect()),
            (HostBuf::F16(v), _) => {
                HostBuf::F16(v.iter().map(|x| f16::from_f32(x.to_f32().abs())).collect())
            }
            (HostBuf::BF16(v), _) => {
                HostBuf::BF16(v.iter().map(|x| bf16::from_f32(x.to_f32().abs())).collect())
            }
            (HostBuf::F32(v), _) => HostBuf::F32(v.iter().map(|x| x.abs()).collect()),
            (HostBuf::I32(v), _) => HostBuf::I32(v.iter().map(|x| x.saturating_abs()).collect()),
        })
        .collect();
    // |a|·|w| needs |codes| too: evaluate with decoded |w| by running on absolute codes.
    let mut k_abs = k.clone();
    let layout = k.weight_layout();
    let k_n = dims.values[k.k] as usize;
    let n_n = dims.values[k.n] as usize;
    let mut abs_inputs = abs;
    if let HostBuf::Packed(b) = &inputs[k.weight] {
        let codes = layout.unpack(b, n_n, k_n);
        let wide: Vec<f32> = codes.iter().map(|c| c.abs() as f32).collect();
        abs_inputs[k.weight] = HostBuf::F32(wide);
        k_abs.inputs[k.weight].tensor.ty = ElemType::Scalar(Scalar::F32);
        return magnitude_f32_weights(&k_abs, dims, &abs_inputs);
    }
    run_f64(&k_abs, dims, &abs_inputs)
}

fn magnitude_f32_weights(
    k: &Kernel,
    dims: &Dims,
    inputs: &[HostBuf],
) -> Result<Vec<f64>, BufferError> {
    let m_n = dims.values[k.m] as usize;
    let n_n = dims.values[k.n] as usize;
    let k_n = dims.values[k.k] as usize;
    let g = k.group.map(|g| g as usize).unwrap_or(k_n);
    let groups = k_n.div_ceil(g);
    let a = inputs[k.act].to_f64();
    let w = inputs[k.weight].to_f64();
    let scales: Vec<(ScaleIndex, Vec<f64>)> =
        k.scales().map(|(i, s)| (s, inputs[i].to_f64())).collect();
    let mut out = vec![0f64; m_n * n_n];
    for m in 0..m_n {
        for n in 0..n_n {
            let mut total = 0f64;
            for kk in 0..k_n {
                let gi = kk / g;
                let mut t = a[m * k_n + kk] * w[n * k_n + kk];
                for (si, v) in &scales {
                    t *= match si {
                        ScaleIndex::RowGroup => v[m * groups + gi],
                        ScaleIndex::ColGroup => v[n * groups + gi],
                        ScaleIndex::Row => v[m],
                        ScaleIndex::Col => v[n],
                    };
                }
                total += t;
            }
            out[m * n_n + n] = total;
        }
    }
    Ok(out)
}
