//! CUDA execution: a kernel is lowered with the GPU schedule
//! ([`qkc_codegen::lower::lower_gpu`]), emitted as PTX ([`qkc_codegen::ptx`]), loaded
//! through the CUDA driver API (cudarc, with the driver library loaded at run time)
//! and launched.
//!
//! A machine without the driver library or without a device gives an `Err`
//! ([`CudaError::NoDriver`], [`CudaError::NoDevice`]), never a panic.
//!
//! Each [`CudaKernel`] compiles one module per M bucket (1, 2, 3..=4, 5..=8, and
//! 9.. when the kernel allows it), lazily, so that the M = 1 launch is not limited by
//! the registers of the 8-row path. [`CudaKernel::run`] is the simple host-to-host
//! call; [`CudaKernel::upload`], [`CudaKernel::launch`], [`CudaKernel::download`] and
//! [`CudaKernel::time`] work on device-resident buffers for benchmarks.

use std::sync::{Arc, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use half::{bf16, f16};
use qkc_codegen::loop_ir::Func;
use qkc_codegen::lower::{lower_gpu, GpuOptions};
use qkc_codegen::ptx::{self, Arch, PtxError, PtxOptions};
use qkc_dsl::host::{check_inputs, BufferError, HostBuf};
use qkc_dsl::ir::{Dims, Kernel, Scalar};

/// A CUDA failure.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver: {0}")]
    NoDriver(String),
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    #[error("{device} has compute capability {major}.{minor}; qkc's PTX needs 8.0 or newer")]
    UnsupportedDevice {
        device: String,
        major: i32,
        minor: i32,
    },
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error(transparent)]
    Ptx(#[from] PtxError),
    #[error("loading the PTX of `{kernel}` failed: {err}")]
    Load { kernel: String, err: String },
    #[error("launch of `{kernel}` failed: {err}")]
    Launch { kernel: String, err: String },
    #[error("CUDA {what} failed: {err}")]
    Driver { what: &'static str, err: String },
    #[error("device buffers do not fit `{kernel}`: {why}")]
    DeviceArgs { kernel: String, why: String },
}

fn driver(what: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> CudaError {
    move |e| CudaError::Driver {
        what,
        err: format!("{e:?}"),
    }
}

/// A GPU with its context and the stream every launch uses.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: Arch,
    name: String,
    cc: (i32, i32),
}

impl CudaDevice {
    /// Opens device `ordinal`. Fails (without panicking) when the driver library is
    /// missing, no device exists, or the device is older than compute capability 8.0.
    pub fn new(ordinal: usize) -> Result<Arc<CudaDevice>, CudaError> {
        // SAFETY: only tries to dlopen the driver library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(CudaError::NoDriver(
                "the CUDA driver library (libcuda.so) was not found".into(),
            ));
        }
        // cudarc panics if a driver entry point is missing: keep that an error too.
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "the driver library could not be used".into());
                CudaError::NoDriver(msg)
            })?
            .map_err(|e| CudaError::NoDevice(format!("device {ordinal}: {e:?}")))?;
        let name = ctx
            .name()
            .unwrap_or_else(|_| format!("CUDA device {ordinal}"));
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver("compute capability query"))?;
        let arch =
            Arch::for_compute_capability(major, minor).ok_or(CudaError::UnsupportedDevice {
                device: name.clone(),
                major,
                minor,
            })?;
        let stream = ctx.default_stream();
        Ok(Arc::new(CudaDevice {
            ctx,
            stream,
            arch,
            name,
            cc: (major, minor),
        }))
    }

    /// The device name, e.g. `NVIDIA H200`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The PTX target used for this device.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Copies bytes to a new device buffer.
    pub fn upload_bytes(&self, bytes: &[u8]) -> Result<CudaSlice<u8>, CudaError> {
        self.stream
            .clone_htod(bytes)
            .map_err(driver("host-to-device copy"))
    }

    /// Measures the device-to-device copy bandwidth (bytes read plus bytes written per
    /// second) over `bytes`-byte buffers: the memory ceiling to compare kernels with.
    pub fn copy_bandwidth(&self, bytes: usize) -> Result<f64, CudaError> {
        let src = self
            .stream
            .alloc_zeros::<u8>(bytes)
            .map_err(driver("allocation"))?;
        let mut dst = self
            .stream
            .alloc_zeros::<u8>(bytes)
            .map_err(driver("allocation"))?;
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let mut times = Vec::new();
        for _ in 0..7 {
            let a = self
                .ctx
                .new_event(flags)
                .map_err(driver("event creation"))?;
            let b = self
                .ctx
                .new_event(flags)
                .map_err(driver("event creation"))?;
            a.record(&self.stream).map_err(driver("event record"))?;
            self.stream
                .memcpy_dtod(&src, &mut dst)
                .map_err(driver("device copy"))?;
            b.record(&self.stream).map_err(driver("event record"))?;
            times.push(a.elapsed_ms(&b).map_err(driver("event timing"))? as f64 * 1e-3);
        }
        // The first copy is a warm-up.
        let mut t = times.split_off(1);
        t.sort_by(f64::total_cmp);
        Ok(2.0 * bytes as f64 / t[t.len() / 2])
    }

    /// Waits for all work on the stream; surfaces asynchronous launch errors.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize().map_err(driver("synchronize"))
    }
}

/// Which code generator writes the PTX that a [`CudaKernel`] loads. Both read the
/// same GPU loop-IR functions and are launched identically (buffers, output, dims).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PtxSource {
    /// qkc's own PTX writer (`qkc_codegen::ptx`).
    #[default]
    Qkc,
    /// LLVM's NVPTX target (`qkc_codegen::llvm`, cargo feature `llvm`).
    #[cfg(feature = "llvm")]
    Llvm,
}

/// How a [`CudaKernel`] is compiled.
#[derive(Clone, Debug, Default)]
pub struct CudaOptions {
    /// Which code generator writes the PTX.
    pub source: PtxSource,
    /// GPU lowering options (default: [`GpuOptions::for_kernel`]); `max_m` and
    /// `m_tiles` are set per M bucket.
    pub gpu: Option<GpuOptions>,
    /// Override the PTX target (it must not exceed the device).
    pub arch: Option<Arch>,
    /// PTX module options (e.g. `.minnctapersm`).
    pub ptx: PtxOptions,
}

/// One compiled M bucket.
struct Variant {
    lo: u64,
    hi: u64,
    /// Launched when K ≥ 2N (`GpuOptions::mma_long_rows`), else the other one of the
    /// bucket.
    long_rows: bool,
    func: Func,
    function: OnceLock<CudaFunction>,
}

/// A kernel compiled for one device.
pub struct CudaKernel {
    dev: Arc<CudaDevice>,
    kernel: Kernel,
    arch: Arch,
    ptx: PtxOptions,
    source: PtxSource,
    variants: Vec<Variant>,
}

/// Device-resident buffers of one launch: the inputs (kernel order) and the output.
pub struct DeviceArgs {
    pub dims: Dims,
    pub inputs: Vec<CudaSlice<u8>>,
    pub output: CudaSlice<u8>,
}

impl CudaKernel {
    /// Lowers `kernel` for the GPU (one loop-IR function per M bucket). Modules are
    /// emitted and loaded on first use.
    pub fn new(
        dev: &Arc<CudaDevice>,
        kernel: &Kernel,
        opts: &CudaOptions,
    ) -> Result<CudaKernel, CudaError> {
        let mut base = opts
            .gpu
            .clone()
            .unwrap_or_else(|| GpuOptions::for_kernel(kernel));
        if opts.source != PtxSource::Qkc {
            // Shared-memory staging and the tensor-core path are PTX-backend lowerings.
            base = base.without_ptx_only();
        }
        let arch = opts.arch.unwrap_or(dev.arch);
        let m_max = kernel.dims[kernel.m].max;
        let mut variants = Vec::new();
        for (lo, hi) in [(1u64, 1u64), (2, 2), (3, 4), (5, 8)] {
            if lo > m_max || !base.gemv {
                break;
            }
            let o = GpuOptions {
                m_tiles: vec![hi as u32],
                max_m: Some(hi),
                ..base.clone()
            };
            let func = lower_gpu(kernel, &o);
            // Long rows (K >= 2N) take the tensor-core path with other loads from
            // another M, where that lowers to a different function.
            let long = base
                .mma_long_rows
                .filter(|_| lo >= 2 && base.mma)
                .map(|long| lower_gpu(kernel, &long.apply(&o)))
                .filter(|f| *f != func);
            variants.push(Variant {
                lo,
                hi: hi.min(m_max),
                long_rows: false,
                func,
                function: OnceLock::new(),
            });
            if let Some(func) = long {
                variants.push(Variant {
                    lo,
                    hi: hi.min(m_max),
                    long_rows: true,
                    func,
                    function: OnceLock::new(),
                });
            }
        }
        let lo = variants.last().map_or(1, |v| v.hi + 1);
        if lo <= m_max {
            let o = GpuOptions {
                gemv: false,
                max_m: None,
                ..base
            };
            variants.push(Variant {
                lo,
                hi: m_max,
                long_rows: false,
                func: lower_gpu(kernel, &o),
                function: OnceLock::new(),
            });
        }
        let ck = CudaKernel {
            dev: dev.clone(),
            kernel: kernel.clone(),
            arch,
            ptx: opts.ptx,
            source: opts.source,
            variants,
        };
        // Catch emitter failures now rather than at the first launch.
        for v in &ck.variants {
            ck.module_text(&v.func)?;
        }
        Ok(ck)
    }

    /// The PTX text and entry name of one variant, from the chosen code generator.
    fn module_text(&self, func: &Func) -> Result<(String, String), CudaError> {
        match self.source {
            PtxSource::Qkc => Ok((
                ptx::emit_with(func, self.arch, &self.ptx)?,
                ptx::entry_name(func),
            )),
            #[cfg(feature = "llvm")]
            PtxSource::Llvm => {
                use qkc_codegen::llvm::{compile_nvptx, NvptxArch};
                let arch = match self.arch {
                    Arch::Sm80 => NvptxArch::Sm80,
                    Arch::Sm90 => NvptxArch::Sm90,
                };
                let code = compile_nvptx(func, arch).map_err(|e| CudaError::Load {
                    kernel: self.kernel.name.clone(),
                    err: format!("LLVM NVPTX: {e}"),
                })?;
                Ok((code.ptx().to_string(), code.kernel.clone()))
            }
        }
    }

    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    /// The variant for `M = m`, the long-rows one of its bucket when `long` and there
    /// is one.
    fn variant(&self, m: u64, long: bool) -> Result<&Variant, CudaError> {
        let bucket = |v: &&Variant| (v.lo..=v.hi).contains(&m);
        self.variants
            .iter()
            .filter(bucket)
            .find(|v| v.long_rows == long)
            .or_else(|| self.variants.iter().find(bucket))
            .ok_or_else(|| CudaError::DeviceArgs {
                kernel: self.kernel.name.clone(),
                why: format!("no compiled variant for M = {m}"),
            })
    }

    /// The variant launched for `dims` (K ≥ 2N picks a bucket's long-rows function).
    fn variant_for(&self, dims: &Dims) -> Result<&Variant, CudaError> {
        let k = &self.kernel;
        let v = |i: usize| dims.values.get(i).copied().unwrap_or(0);
        self.variant(v(k.m), v(k.k) >= v(k.n).saturating_mul(2))
    }

    /// The loop-IR function that runs for `M = m` (with K < 2N; see [`Self::func_for`]).
    pub fn func(&self, m: u64) -> Result<&Func, CudaError> {
        Ok(&self.variant(m, false)?.func)
    }

    /// The loop-IR function that runs for `dims`.
    pub fn func_for(&self, dims: &Dims) -> Result<&Func, CudaError> {
        Ok(&self.variant_for(dims)?.func)
    }

    /// The PTX module that runs for `M = m` (with K < 2N).
    pub fn ptx(&self, m: u64) -> Result<String, CudaError> {
        Ok(self.module_text(&self.variant(m, false)?.func)?.0)
    }

    fn function(&self, v: &Variant) -> Result<CudaFunction, CudaError> {
        if let Some(f) = v.function.get() {
            return Ok(f.clone());
        }
        let (text, entry) = self.module_text(&v.func)?;
        let load = |err: String| CudaError::Load {
            kernel: self.kernel.name.clone(),
            err,
        };
        let module = self
            .dev
            .ctx
            .load_module(Ptx::from_src(text))
            .map_err(|e| load(format!("{e:?}")))?;
        let f = module
            .load_function(&entry)
            .map_err(|e| load(format!("{e:?}")))?;
        let _ = v.function.set(f.clone());
        Ok(f)
    }

    /// Validates inputs, copies them to the device, launches, and copies the output
    /// back.
    pub fn run(&self, dims: &Dims, inputs: &[HostBuf]) -> Result<HostBuf, CudaError> {
        let mut args = self.upload(dims, inputs)?;
        self.launch(&mut args)?;
        self.download(&args)
    }

    /// Validates inputs and copies them to new device buffers, with an output buffer
    /// filled with `0xFF` bytes (NaN / -1), so unwritten outputs show.
    pub fn upload(&self, dims: &Dims, inputs: &[HostBuf]) -> Result<DeviceArgs, CudaError> {
        check_inputs(&self.kernel, dims, inputs)?;
        let ins = inputs
            .iter()
            .map(|b| self.dev.upload_bytes(&b.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let out_len =
            self.kernel.buffer_len(&self.kernel.output, dims) * self.kernel.out_ty().bytes();
        let output = self.dev.upload_bytes(&vec![0xFF; out_len])?;
        Ok(DeviceArgs {
            dims: dims.clone(),
            inputs: ins,
            output,
        })
    }

    /// Launches on device-resident buffers (asynchronously, on the device's stream).
    pub fn launch(&self, args: &mut DeviceArgs) -> Result<(), CudaError> {
        let k = &self.kernel;
        k.validate_dims(&args.dims)
            .map_err(|why| CudaError::DeviceArgs {
                kernel: k.name.clone(),
                why,
            })?;
        if args.inputs.len() != k.inputs.len() {
            return Err(CudaError::DeviceArgs {
                kernel: k.name.clone(),
                why: format!(
                    "{} input buffers, expected {}",
                    args.inputs.len(),
                    k.inputs.len()
                ),
            });
        }
        for (i, (p, b)) in k.inputs.iter().zip(&args.inputs).enumerate() {
            let need = match &p.tensor.ty {
                qkc_dsl::ir::ElemType::Packed { .. } => k.buffer_len(&p.tensor, &args.dims),
                qkc_dsl::ir::ElemType::Scalar(s) => k.buffer_len(&p.tensor, &args.dims) * s.bytes(),
            };
            if b.len() < need {
                return Err(CudaError::DeviceArgs {
                    kernel: k.name.clone(),
                    why: format!(
                        "input {i} (`{}`) holds {} bytes, needs {need}",
                        p.tensor.name,
                        b.len()
                    ),
                });
            }
        }
        let out_need = k.buffer_len(&k.output, &args.dims) * k.out_ty().bytes();
        if args.output.len() < out_need {
            return Err(CudaError::DeviceArgs {
                kernel: k.name.clone(),
                why: format!(
                    "the output holds {} bytes, needs {out_need}",
                    args.output.len()
                ),
            });
        }
        let v = self.variant_for(&args.dims)?;
        let f = self.function(v)?;
        let dims: Vec<i64> = args.dims.values.iter().map(|&d| d as i64).collect();
        let (grid, block) = ptx::launch_shape(&v.func, &dims)?;
        let cfg = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.dev.stream.launch_builder(&f);
        for s in &args.inputs {
            b.arg(s);
        }
        b.arg(&mut args.output);
        for d in &dims {
            b.arg(d);
        }
        // SAFETY: the arguments match the entry's parameters (buffers in kernel order,
        // then the output, then the dims as s64), every buffer was checked above to
        // hold what the dims need, and the kernel only touches those bytes (the
        // loop-IR interpreter checks the same lowering for out-of-bounds accesses).
        unsafe { b.launch(cfg) }.map_err(|e| CudaError::Launch {
            kernel: k.name.clone(),
            err: format!("{e:?}"),
        })?;
        Ok(())
    }

    /// Copies the output back (waiting for the launch); launch errors surface here.
    pub fn download(&self, args: &DeviceArgs) -> Result<HostBuf, CudaError> {
        let bytes = self
            .dev
            .stream
            .clone_dtoh(&args.output)
            .map_err(|e| CudaError::Launch {
                kernel: self.kernel.name.clone(),
                err: format!("{e:?}"),
            })?;
        Ok(bytes_to_host(self.kernel.out_ty(), &bytes))
    }

    /// Times `iters` launches (after `warmup` untimed ones) with CUDA events, cycling
    /// through `sets` (e.g. several weight copies, so L2 cannot hold them). Returns
    /// each launch's time in microseconds.
    pub fn time(
        &self,
        sets: &mut [DeviceArgs],
        warmup: usize,
        iters: usize,
    ) -> Result<Vec<f64>, CudaError> {
        if sets.is_empty() {
            return Ok(Vec::new());
        }
        let n = sets.len();
        for i in 0..warmup {
            self.launch(&mut sets[i % n])?;
        }
        self.dev.synchronize()?;
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let mut events = Vec::with_capacity(iters);
        for i in 0..iters {
            let a = self
                .dev
                .ctx
                .new_event(flags)
                .map_err(driver("event creation"))?;
            let b = self
                .dev
                .ctx
                .new_event(flags)
                .map_err(driver("event creation"))?;
            a.record(&self.dev.stream).map_err(driver("event record"))?;
            self.launch(&mut sets[i % n])?;
            b.record(&self.dev.stream).map_err(driver("event record"))?;
            events.push((a, b));
        }
        self.dev.synchronize()?;
        events
            .iter()
            .map(|(a, b)| {
                a.elapsed_ms(b)
                    .map(|ms| ms as f64 * 1e3)
                    .map_err(driver("event timing"))
            })
            .collect()
    }
}

/// Little-endian output bytes as a host buffer of the output type.
pub fn bytes_to_host(ty: Scalar, b: &[u8]) -> HostBuf {
    match ty {
        Scalar::F32 => HostBuf::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Scalar::I32 | Scalar::I8 => HostBuf::I32(
            b.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Scalar::F16 => HostBuf::F16(
            b.chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        Scalar::BF16 => HostBuf::BF16(
            b.chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
    }
}
