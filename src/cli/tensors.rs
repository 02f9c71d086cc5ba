//! safetensors I/O for `qkc run --inputs/--save`: one tensor per kernel parameter,
//! named as the parameter; packed weights are raw `U8` bytes in layout order.

use std::collections::HashMap;
use std::path::Path;

use half::{bf16, f16};
use miette::{miette, IntoDiagnostic, WrapErr};
use qkc_dsl::host::HostBuf;
use qkc_dsl::ir::{Dims, ElemType, Extent, Kernel, Scalar, Tensor};
use safetensors::{Dtype, SafeTensors};

fn dtype_for(ty: &ElemType) -> Dtype {
    match ty {
        ElemType::Packed { .. } => Dtype::U8,
        ElemType::Scalar(Scalar::I8) => Dtype::I8,
        ElemType::Scalar(Scalar::I32) => Dtype::I32,
        ElemType::Scalar(Scalar::F16) => Dtype::F16,
        ElemType::Scalar(Scalar::BF16) => Dtype::BF16,
        ElemType::Scalar(Scalar::F32) => Dtype::F32,
    }
}

fn from_bytes(ty: &ElemType, b: &[u8]) -> HostBuf {
    match ty {
        ElemType::Packed { .. } => HostBuf::Packed(b.to_vec()),
        ElemType::Scalar(Scalar::I8) => HostBuf::I8(b.iter().map(|&x| x as i8).collect()),
        ElemType::Scalar(Scalar::I32) => HostBuf::I32(
            b.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        ElemType::Scalar(Scalar::F16) => HostBuf::F16(
            b.chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        ElemType::Scalar(Scalar::BF16) => HostBuf::BF16(
            b.chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        ElemType::Scalar(Scalar::F32) => HostBuf::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
    }
}

/// Shape of a tensor as stored: packed tensors are `[rows..., row_bytes]`.
pub fn stored_shape(k: &Kernel, t: &Tensor, dims: &Dims) -> Vec<usize> {
    let mut s: Vec<usize> = t.shape.iter().map(|&e| k.extent(e, dims)).collect();
    if let ElemType::Packed { layout, .. } = &t.ty {
        if let Some(last) = s.last_mut() {
            *last = layout.row_bytes(*last);
        }
    }
    s
}

/// Infers dimension values from the shapes of the tensors in a safetensors file.
pub fn infer_dims(k: &Kernel, st: &SafeTensors) -> miette::Result<Vec<(String, u64)>> {
    let mut found: HashMap<usize, (u64, String)> = HashMap::new();
    for p in &k.inputs {
        let t = &p.tensor;
        let Ok(view) = st.tensor(&t.name) else {
            continue;
        };
        let shape = view.shape();
        if shape.len() != t.shape.len() {
            continue;
        }
        for (i, (&e, &v)) in t.shape.iter().zip(shape).enumerate() {
            let packed_last = matches!(t.ty, ElemType::Packed { .. }) && i == t.shape.len() - 1;
            if let (Extent::Dim(d), false) = (e, packed_last) {
                if let Some((prev, from)) = found.get(&d) {
                    if *prev != v as u64 {
                        return Err(miette!(
                            "dimension {} is {prev} in `{from}` but {v} in `{}`",
                            k.dims[d].name,
                            t.name
                        ));
                    }
                } else {
                    found.insert(d, (v as u64, t.name.clone()));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (i, d) in k.dims.iter().enumerate() {
        let (v, _) = found.get(&i).ok_or_else(|| {
            miette!(
                "cannot infer dimension {} from the inputs; pass --dims",
                d.name
            )
        })?;
        out.push((d.name.clone(), *v));
    }
    Ok(out)
}

/// Reads a safetensors file into memory.
pub fn read_file(path: &Path) -> miette::Result<Vec<u8>> {
    std::fs::read(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read {}", path.display()))
}

/// Loads one buffer per kernel input, checking name, dtype and length.
pub fn load_inputs(
    k: &Kernel,
    dims: &Dims,
    st: &SafeTensors,
    path: &Path,
) -> miette::Result<Vec<HostBuf>> {
    let mut out = Vec::new();
    for p in &k.inputs {
        let t = &p.tensor;
        let view = st.tensor(&t.name).map_err(|_| {
            let names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
            miette!(
                "{}: no tensor named `{}` for parameter `{}` (the file holds: {})",
                path.display(),
                t.name,
                t.name,
                names.join(", ")
            )
        })?;
        let want = dtype_for(&t.ty);
        if view.dtype() != want {
            return Err(miette!(
                "{}: tensor `{}` has dtype {:?}, parameter `{}: {}` needs {want:?}",
                path.display(),
                t.name,
                view.dtype(),
                t.name,
                t.ty.name()
            ));
        }
        let buf = from_bytes(&t.ty, view.data());
        let expected = k.buffer_len(t, dims);
        if buf.len() != expected {
            return Err(miette!(
                "{}: tensor `{}` holds {} elements, parameter `{}` {} needs {expected} for {}",
                path.display(),
                t.name,
                buf.len(),
                t.name,
                k.shape_str(t),
                dims_str(k, dims)
            ));
        }
        out.push(buf);
    }
    Ok(out)
}

pub fn dims_str(k: &Kernel, dims: &Dims) -> String {
    k.dims
        .iter()
        .zip(&dims.values)
        .map(|(d, v)| format!("{}={v}", d.name))
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes named buffers to a safetensors file.
pub fn save(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> miette::Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, dt, shape, data)| {
            safetensors::tensor::TensorView::new(*dt, shape.clone(), data)
                .map(|v| (n.clone(), v))
                .map_err(|e| miette!("cannot build tensor `{n}`: {e}"))
        })
        .collect::<miette::Result<_>>()?;
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| miette!("cannot write {}: {e}", path.display()))
}

/// The kernel's output as a named safetensors entry.
pub fn output_entry(
    k: &Kernel,
    dims: &Dims,
    out: &HostBuf,
) -> (String, Dtype, Vec<usize>, Vec<u8>) {
    (
        k.output.name.clone(),
        dtype_for(&k.output.ty),
        stored_shape(k, &k.output, dims),
        out.as_bytes(),
    )
}

/// Inputs as named safetensors entries (used by tests and `--dump-inputs`).
pub fn input_entries(
    k: &Kernel,
    dims: &Dims,
    inputs: &[HostBuf],
) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    k.inputs
        .iter()
        .zip(inputs)
        .map(|(p, b)| {
            (
                p.tensor.name.clone(),
                dtype_for(&p.tensor.ty),
                stored_shape(k, &p.tensor, dims),
                b.as_bytes(),
            )
        })
        .collect()
}
