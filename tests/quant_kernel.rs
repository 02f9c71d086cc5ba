//! The API that `qkc::quant_kernel!` generates: typed CPU runs against the
//! reference interpreter, dimension inference and the errors for slices that do
//! not fit (naming the tensor), the embedded PTX and HIP sources, and the CUDA
//! path when a GPU is present.

use qkc::dsl::host::HostBuf;
use qkc::half::f16;
use qkc::runtime::cpu::compare_with_reference;

qkc::quant_kernel! {
    /// The flagship 3.5-bit GEMV.
    pub Gemv35 = kernel gemv(x: i8[M, K], xs: f32[M], w: q3p5[N, K], ws: f16[N, K / 128]) -> y: f32[M, N] {
        where M <= 8;
        y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128] * xs[m];
    }

    /// Float activations, bf16 group scales, a column scale, f16 output.
    pub FloatGemv = kernel fgemv(x: f32[M, K], w: s4[N, K], ws: bf16[N, K / 32], cs: f32[N]) -> y: f16[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 32] * cs[n];
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn f32(&mut self) -> f32 {
        self.next() as f32 / (1u64 << 31) as f32 - 1.0
    }
}

struct GemvData {
    dims: [usize; 3],
    x: Vec<i8>,
    xs: Vec<f32>,
    w: Vec<u8>,
    ws: Vec<f16>,
}

impl GemvData {
    fn new(m: usize, k: usize, n: usize, seed: u64) -> GemvData {
        let mut r = Rng(seed);
        let layout = Gemv35::WEIGHT_LAYOUT;
        let codes: Vec<i32> = (0..n * k)
            .map(|i| {
                let f = layout.field_of(i % k);
                f.min() + (r.next() % (f.max() - f.min() + 1) as u32) as i32
            })
            .collect();
        GemvData {
            dims: [m, k, n],
            x: (0..m * k).map(|_| r.next() as i8).collect(),
            xs: (0..m).map(|_| 0.01 + 0.01 * r.f32().abs()).collect(),
            w: layout.pack(&codes, n, k).unwrap(),
            ws: (0..n * k.div_ceil(128))
                .map(|_| f16::from_f32(0.02 + 0.01 * r.f32()))
                .collect(),
        }
    }

    fn bufs(&self) -> Vec<HostBuf> {
        vec![
            HostBuf::I8(self.x.clone()),
            HostBuf::F32(self.xs.clone()),
            HostBuf::Packed(self.w.clone()),
            HostBuf::F16(self.ws.clone()),
        ]
    }
}

#[test]
fn typed_run_matches_the_reference() {
    let cpu = Gemv35::cpu().unwrap();
    let kernel = Gemv35::kernel().unwrap();
    // K = 301: a partial last group and a padded last unit.
    for (m, k, n) in [(1, 256, 7), (3, 301, 5), (8, 1024, 33)] {
        let d = GemvData::new(m, k, n, (m * k * n) as u64);
        let y = cpu.run(&d.x, &d.xs, &d.w, &d.ws).unwrap();
        assert_eq!(y.len(), m * n);
        let dims = qkc::dsl::ir::Dims {
            values: d.dims.iter().map(|&v| v as u64).collect(),
        };
        let c =
            compare_with_reference(&kernel, &dims, &d.bufs(), &HostBuf::F32(y.clone())).unwrap();
        assert!(c.passed(), "M={m} K={k} N={n}: {c:?}");
        assert_eq!(cpu.run_dims(d.dims, &d.x, &d.xs, &d.w, &d.ws).unwrap(), y);
    }
}

#[test]
fn float_kernel_returns_f16() {
    let (m, k, n) = (2usize, 96usize, 4usize);
    let mut r = Rng(3);
    let x: Vec<f32> = (0..m * k).map(|_| r.f32()).collect();
    let codes: Vec<i32> = (0..n * k).map(|_| (r.next() % 16) as i32 - 8).collect();
    let w = FloatGemv::WEIGHT_LAYOUT.pack(&codes, n, k).unwrap();
    let ws: Vec<qkc::half::bf16> = (0..n * 3)
        .map(|i| qkc::half::bf16::from_f32(0.1 + 0.01 * i as f32))
        .collect();
    let cs: Vec<f32> = (0..n).map(|i| 1.0 + i as f32).collect();
    // M is only known through `x`'s product with K: no `run`, `run_dims` only.
    assert!(FloatGemv::DIMS_PLAN.len() < 3);
    let y: Vec<f16> = FloatGemv::cpu()
        .unwrap()
        .run_dims([m, k, n], &x, &w, &ws, &cs)
        .unwrap();
    let kernel = FloatGemv::kernel().unwrap();
    let dims = kernel
        .dims_from_pairs(&[
            ("M".into(), m as u64),
            ("K".into(), k as u64),
            ("N".into(), n as u64),
        ])
        .unwrap();
    let bufs = vec![
        HostBuf::F32(x),
        HostBuf::Packed(w),
        HostBuf::BF16(ws),
        HostBuf::F32(cs),
    ];
    let c = compare_with_reference(&kernel, &dims, &bufs, &HostBuf::F16(y)).unwrap();
    assert!(c.passed(), "{c:?}");
}

#[test]
fn wrong_slices_are_errors_naming_the_tensor() {
    let cpu = Gemv35::cpu().unwrap();
    let d = GemvData::new(2, 256, 3, 1);
    let err = |r: Result<Vec<f32>, qkc::typed::Error>| r.unwrap_err().to_string();

    let e = err(cpu.run(&d.x[1..], &d.xs, &d.w, &d.ws));
    assert_eq!(
        e,
        "kernel `gemv`: cannot infer K from the slice lengths: `x` [M, K] holds 511 elements, not a multiple of 2 with M = 2"
    );
    let e = err(cpu.run(&d.x, &d.xs, &d.w[..d.w.len() - 1], &d.ws));
    assert!(
        e.contains("cannot infer N") && e.contains("`w` [N, K] holds 335 bytes"),
        "{e}"
    );
    let e = err(cpu.run(&d.x, &d.xs, &d.w, &d.ws[1..]));
    assert!(
        e.contains("`ws` [N, K / 128] needs 6 elements, the buffer holds 5"),
        "{e}"
    );
    assert!(
        e.contains("M = 2 from `xs`, K = 256 from `x`, N = 3 from `w`"),
        "{e}"
    );
    let e = err(cpu.run(&d.x, &[], &d.w, &d.ws));
    assert!(e.contains("`xs` [M] is empty"), "{e}");
    // x and xs agree on M = 9, which breaks `where M <= 8`.
    let x9 = vec![0i8; 9 * 256];
    let e = err(cpu.run(&x9, &[1.0; 9], &d.w, &d.ws));
    assert!(
        e.contains("dimension M = 9 exceeds its bound M <= 8"),
        "{e}"
    );
    // Explicit dims: the first slice that does not fit is named.
    let e = err(cpu.run_dims([2, 128, 3], &d.x, &d.xs, &d.w, &d.ws));
    assert_eq!(
        e,
        "kernel `gemv`: `x` [M, K] needs 256 elements, the buffer holds 512"
    );
    let e = err(cpu.run_dims([0, 256, 3], &d.x, &d.xs, &d.w, &d.ws));
    assert!(e.contains("dimension M = 0"), "{e}");
}

#[test]
fn embedded_sources() {
    assert_eq!(Gemv35::NAME, "gemv");
    assert_eq!(Gemv35::DIMS, ["M", "K", "N"]);
    assert_eq!(Gemv35::DIM_MAX, [8, i32::MAX as u64, i32::MAX as u64]);
    assert_eq!(Gemv35::INPUTS, ["x", "xs", "w", "ws"]);
    assert_eq!(Gemv35::OUTPUT, "y");
    assert_eq!(Gemv35::GROUP, Some(128));
    assert_eq!(Gemv35::WEIGHT_LAYOUT, qkc::layout::Q3P5_STREAM);
    assert_eq!(
        Gemv35::SOURCE,
        "kernel gemv(x: i8[M, K], xs: f32[M], w: q3p5[N, K], ws: f16[N, K / 128]) -> y: f32[M, N] {\n    \
         where M <= 8;\n    \
         y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128] * xs[m];\n}\n"
    );
    assert_eq!(Gemv35::kernel().unwrap().name, "gemv");

    assert_eq!(Gemv35::PTX_ERROR, None);
    for (ptx, target) in [
        (Gemv35::PTX_SM80, ".target sm_80"),
        (Gemv35::PTX_SM90, ".target sm_90"),
    ] {
        assert!(
            ptx.contains(".entry gemv"),
            "{}",
            &ptx[..ptx.len().min(400)]
        );
        assert!(ptx.contains(target));
    }
    assert_eq!(Gemv35::HIP_ERROR, None);
    assert_eq!(Gemv35::HIP_ARCH, "gfx90a");
    assert!(Gemv35::HIP_SOURCE.contains("__global__"));
    assert!(Gemv35::HIP_SOURCE.contains("gemv"));
    assert!(Gemv35::HIP_HEADER.contains("gemv_launch"));
    // The embedded HIP source is what the HIP backend writes for the same source.
    let k = Gemv35::kernel().unwrap();
    let m = qkc::codegen::hip::emit_kernel(
        &k,
        &qkc::codegen::hip::HipOptions::new(qkc::codegen::hip::Arch::Gfx90a),
    )
    .unwrap();
    assert_eq!(m.source, Gemv35::HIP_SOURCE);
    assert!(FloatGemv::PTX_SM90.contains(".entry fgemv"));
}

#[test]
fn cuda_when_present() {
    let dev = match qkc::runtime::cuda::CudaDevice::new(0) {
        Ok(dev) => dev,
        Err(e) => {
            eprintln!("skipping the CUDA check: {e}");
            return;
        }
    };
    let gpu = Gemv35::cuda(&dev).unwrap();
    let cpu = Gemv35::cpu().unwrap();
    for (m, k, n) in [(1, 4096, 64), (5, 1000, 17)] {
        let d = GemvData::new(m, k, n, 11);
        let y_gpu = gpu.run(&d.x, &d.xs, &d.w, &d.ws).unwrap();
        let y_cpu = cpu.run(&d.x, &d.xs, &d.w, &d.ws).unwrap();
        let kernel = Gemv35::kernel().unwrap();
        let dims = qkc::dsl::ir::Dims {
            values: d.dims.iter().map(|&v| v as u64).collect(),
        };
        let c = compare_with_reference(&kernel, &dims, &d.bufs(), &HostBuf::F32(y_gpu.clone()))
            .unwrap();
        assert!(c.passed(), "{c:?}");
        assert_eq!(y_gpu.len(), y_cpu.len());
        let mut args = gpu.upload(&d.x, &d.xs, &d.w, &d.ws).unwrap();
        gpu.launch(&mut args).unwrap();
        assert_eq!(gpu.download(&args).unwrap(), y_gpu);
    }
    let e = gpu
        .run(&[0i8; 10], &[1.0], &[0u8; 10], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`w`") || e.contains("`ws`"), "{e}");
}
