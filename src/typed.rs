//! Run-time support for the types that [`quant_kernel!`](crate::quant_kernel)
//! generates: the error type of their typed `run` methods, slices to host
//! buffers ([`Elem`]), dimension inference from slice lengths ([`infer_dims`]) and
//! the checked CPU and CUDA launches behind `run` and `run_dims`.
//!
//! Generated code calls these functions; they are public so that it can, and so
//! that their behaviour is documented in one place.
//!
//! **Dimension inference.** The macro computes, while expanding, a plan of
//! `(dimension, input)` steps: each step's input has that dimension as its only
//! unknown extent, as a plain extent (not `K / G`, not the packed K of a weight
//! row), so the dimension is the input's length divided by the product of its
//! other extents. Running the plan in order gives every dimension; a kernel whose
//! slices do not determine its dimensions (e.g. `x: i8[M, K]` as the only place
//! where M and K appear) gets no `run`, only `run_dims`. After inference every
//! slice is checked against the dimensions ([`qkc_dsl::host::check_inputs`]), and
//! errors name the tensor and say where each dimension came from.

use half::{bf16, f16};

use crate::dsl::host::{check_inputs, BufferError, HostBuf};
use crate::dsl::ir::{Dims, Kernel};
use crate::dsl::Diag;
use crate::runtime::cpu::{CpuError, CpuKernel};
use crate::runtime::cuda::{CudaError, CudaKernel, DeviceArgs};

/// Why a generated kernel type could not compile or run a kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded source no longer compiles (the front end linked at run time
    /// differs from the one the macro used).
    #[error("kernel `{kernel}`: the embedded source does not compile: {diag}")]
    Source { kernel: String, diag: Box<Diag> },
    /// The slice lengths do not give a dimension.
    #[error("kernel `{kernel}`: cannot infer {dim} from the slice lengths: {why}")]
    Infer {
        kernel: String,
        dim: String,
        why: String,
    },
    /// A slice does not fit the dimensions inferred from the others.
    #[error(
        "kernel `{kernel}`: {source} (dimensions inferred from the slice lengths: {inferred})"
    )]
    Inferred {
        kernel: String,
        inferred: String,
        #[source]
        source: Box<BufferError>,
    },
    /// A slice does not fit explicit dimensions, or the dimensions break a bound.
    #[error("kernel `{kernel}`: {source}")]
    Buffer {
        kernel: String,
        #[source]
        source: Box<BufferError>,
    },
    /// Compiling or running on the CPU failed (boxed: the error is large).
    #[error(transparent)]
    Cpu(Box<CpuError>),
    /// Opening, compiling or running on a CUDA device failed.
    #[error(transparent)]
    Cuda(Box<CudaError>),
    /// The output buffer has another element type than the typed API returns.
    #[error("kernel `{kernel}` returned {got} data, expected {expected}")]
    Output {
        kernel: String,
        got: &'static str,
        expected: &'static str,
    },
}

impl From<CpuError> for Error {
    fn from(e: CpuError) -> Error {
        Error::Cpu(Box::new(e))
    }
}

impl From<CudaError> for Error {
    fn from(e: CudaError) -> Error {
        Error::Cuda(Box::new(e))
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for i8 {}
    impl Sealed for u8 {}
    impl Sealed for i32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
    impl Sealed for f32 {}
}

/// An element type of a typed kernel argument or result: `i8`, `i32`, `f16`,
/// `bf16`, `f32`, or `u8` for the raw bytes of packed weights.
pub trait Elem: Copy + sealed::Sealed {
    /// The element type's name.
    const NAME: &'static str;
    /// Copies a slice into a host buffer.
    fn host(data: &[Self]) -> HostBuf;
    /// Takes the elements out of a host buffer of this type.
    fn from_host(buf: HostBuf) -> Result<Vec<Self>, HostBuf>;
}

macro_rules! elem {
    ($t:ty, $name:literal, $variant:ident) => {
        impl Elem for $t {
            const NAME: &'static str = $name;
            fn host(data: &[Self]) -> HostBuf {
                HostBuf::$variant(data.to_vec())
            }
            fn from_host(buf: HostBuf) -> Result<Vec<Self>, HostBuf> {
                match buf {
                    HostBuf::$variant(v) => Ok(v),
                    other => Err(other),
                }
            }
        }
    };
}

elem!(i8, "i8", I8);
elem!(u8, "packed bytes", Packed);
elem!(i32, "i32", I32);
elem!(f16, "f16", F16);
elem!(bf16, "bf16", BF16);
elem!(f32, "f32", F32);

/// Dimensions of one launch and, when inferred, where each came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    pub dims: Dims,
    /// `M = 1 from `xs`, K = 4096 from `x`, ...` for inferred dimensions.
    pub inferred: Option<String>,
}

/// Explicit dimensions, in the kernel's order (`Kernel::dims`).
pub fn explicit_dims(values: &[usize]) -> LaunchDims {
    LaunchDims {
        dims: Dims {
            values: values.iter().map(|&v| v as u64).collect(),
        },
        inferred: None,
    }
}

/// Runs an inference plan (see the module docs) on the input lengths (elements,
/// or bytes for packed inputs), in kernel order.
pub fn infer_dims(
    k: &Kernel,
    plan: &[(usize, usize)],
    lens: &[usize],
) -> Result<LaunchDims, Error> {
    let mut values: Vec<Option<u64>> = vec![None; k.dims.len()];
    let mut how = Vec::with_capacity(plan.len());
    let infer_err = |d: usize, why: String| Error::Infer {
        kernel: k.name.clone(),
        dim: k
            .dims
            .get(d)
            .map_or_else(|| format!("dimension {d}"), |x| x.name.clone()),
        why,
    };
    for &(d, i) in plan {
        let (Some(input), Some(&len)) = (k.inputs.get(i), lens.get(i)) else {
            return Err(infer_err(
                d,
                format!("no input {i} (the plan does not fit the kernel)"),
            ));
        };
        if d >= values.len() {
            return Err(infer_err(
                d,
                "no such dimension (the plan does not fit the kernel)".into(),
            ));
        }
        let t = &input.tensor;
        let unit = if matches!(t.ty, crate::dsl::ir::ElemType::Packed { .. }) {
            "bytes"
        } else {
            "elements"
        };
        // The other extents are known; with this dimension set to 1 the buffer
        // length is their product.
        let probe = Dims {
            values: values.iter().map(|v| v.unwrap_or(1).max(1)).collect(),
        };
        let rest = k.buffer_len(t, &probe);
        let known: Vec<String> = t
            .shape
            .iter()
            .filter_map(|e| {
                let dd = match *e {
                    crate::dsl::ir::Extent::Dim(x) | crate::dsl::ir::Extent::Groups(x, _) => x,
                };
                (dd != d).then(|| values[dd].map(|v| format!("{} = {v}", k.dims[dd].name)))?
            })
            .collect();
        let known = if known.is_empty() {
            String::new()
        } else {
            format!(" with {}", known.join(", "))
        };
        if len == 0 {
            return Err(infer_err(
                d,
                format!("`{}` {} is empty", t.name, k.shape_str(t)),
            ));
        }
        if rest == 0 || len % rest != 0 {
            return Err(infer_err(
                d,
                format!(
                    "`{}` {} holds {len} {unit}, not a multiple of {rest}{known}",
                    t.name,
                    k.shape_str(t)
                ),
            ));
        }
        let v = (len / rest) as u64;
        values[d] = Some(v);
        how.push(format!("{} = {v} from `{}`", k.dims[d].name, t.name));
    }
    let mut out = Vec::with_capacity(values.len());
    for (d, v) in values.iter().enumerate() {
        out.push(v.ok_or_else(|| {
            infer_err(
                d,
                "the slice lengths do not determine it; use `run_dims`".into(),
            )
        })?);
    }
    Ok(LaunchDims {
        dims: Dims { values: out },
        inferred: Some(how.join(", ")),
    })
}

/// Checks the dimensions and every buffer, naming the tensor on failure.
pub fn check(k: &Kernel, d: &LaunchDims, bufs: &[HostBuf]) -> Result<(), Error> {
    check_inputs(k, &d.dims, bufs).map_err(|e| {
        let source = Box::new(e);
        match &d.inferred {
            Some(inferred) => Error::Inferred {
                kernel: k.name.clone(),
                inferred: inferred.clone(),
                source,
            },
            None => Error::Buffer {
                kernel: k.name.clone(),
                source,
            },
        }
    })
}

/// Checks and runs a kernel on the CPU.
pub fn run_cpu(k: &CpuKernel, d: &LaunchDims, bufs: Vec<HostBuf>) -> Result<HostBuf, Error> {
    check(k.kernel(), d, &bufs)?;
    Ok(k.run(&d.dims, &bufs)?)
}

/// Checks and runs a kernel on its CUDA device (copies in, launches, copies out).
pub fn run_cuda(k: &CudaKernel, d: &LaunchDims, bufs: Vec<HostBuf>) -> Result<HostBuf, Error> {
    check(k.kernel(), d, &bufs)?;
    Ok(k.run(&d.dims, &bufs)?)
}

/// Checks the buffers and copies them to the kernel's device.
pub fn upload_cuda(
    k: &CudaKernel,
    d: &LaunchDims,
    bufs: Vec<HostBuf>,
) -> Result<DeviceArgs, Error> {
    check(k.kernel(), d, &bufs)?;
    Ok(k.upload(&d.dims, &bufs)?)
}

/// The output's elements as the typed API returns them.
pub fn output<T: Elem>(k: &Kernel, out: HostBuf) -> Result<Vec<T>, Error> {
    T::from_host(out).map_err(|other| Error::Output {
        kernel: k.name.clone(),
        got: other.type_name(),
        expected: T::NAME,
    })
}

/// Compiles the source embedded by the macro and returns its (only) kernel.
pub fn compile_embedded(name: &str, src: &str) -> Result<Kernel, Error> {
    let prog = crate::dsl::compile(name, src).map_err(|d| Error::Source {
        kernel: name.to_string(),
        diag: Box::new(d),
    })?;
    prog.kernels
        .into_iter()
        .find(|k| k.name == name)
        .ok_or_else(|| Error::Infer {
            kernel: name.to_string(),
            dim: "the kernel".into(),
            why: "the embedded source has no kernel of this name".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEMV: &str = "kernel gemv(x: i8[M, K], xs: f32[M], w: q3p5[N, K], ws: f16[N, K / 128]) -> y: f32[M, N] {\n    where M <= 8;\n    y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128] * xs[m];\n}\n";

    fn gemv() -> Kernel {
        compile_embedded("gemv", GEMV).unwrap()
    }

    // M from xs, K from x, N from w (dims order M, K, N).
    const PLAN: &[(usize, usize)] = &[(0, 1), (1, 0), (2, 2)];

    #[test]
    fn infers_in_plan_order() {
        let k = gemv();
        let d = infer_dims(&k, PLAN, &[2 * 256, 2, 3 * 112, 3 * 2]).unwrap();
        assert_eq!(d.dims.values, [2, 256, 3]);
        assert_eq!(
            d.inferred.as_deref(),
            Some("M = 2 from `xs`, K = 256 from `x`, N = 3 from `w`")
        );
    }

    #[test]
    fn names_the_tensor_that_does_not_divide() {
        let k = gemv();
        let e = infer_dims(&k, PLAN, &[2 * 256 + 1, 2, 3 * 112, 3 * 2]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "kernel `gemv`: cannot infer K from the slice lengths: `x` [M, K] holds 513 elements, not a multiple of 2 with M = 2"
        );
        let e = infer_dims(&k, PLAN, &[0, 0, 0, 0]).unwrap_err();
        assert!(e.to_string().contains("`xs` [M] is empty"), "{e}");
    }

    #[test]
    fn inferred_dims_are_checked_against_every_buffer() {
        let k = gemv();
        let d = infer_dims(&k, PLAN, &[256, 1, 112, 1]).unwrap();
        let bufs = vec![
            HostBuf::I8(vec![0; 256]),
            HostBuf::F32(vec![1.0]),
            HostBuf::Packed(vec![0; 112]),
            HostBuf::F16(vec![f16::ONE]),
        ];
        let e = check(&k, &d, &bufs).unwrap_err().to_string();
        assert!(
            e.contains("`ws` [N, K / 128] needs 2 elements, the buffer holds 1"),
            "{e}"
        );
        assert!(e.contains("K = 256 from `x`"), "{e}");
    }

    #[test]
    fn outputs_convert_only_to_their_type() {
        let k = gemv();
        assert_eq!(output::<f32>(&k, HostBuf::F32(vec![1.0])).unwrap(), [1.0]);
        let e = output::<f16>(&k, HostBuf::F32(vec![1.0])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "kernel `gemv` returned f32 data, expected f16"
        );
    }
}
