//! CUDA end to end: every built-in layout × activation type (with and without group
//! scales) and every example kernel runs on the GPU through the PTX backend and
//! matches the reference interpreter on fresh random inputs, on odd shapes (1×1×2,
//! 3×17×33, N and K not multiples of any tile, M = 1..9) and 16-byte-aligned ones
//! (the vector path). Integer outputs must be exact; float outputs are held to
//! `(K + 64) · 2^-24` of the sum of |terms| plus one rounding of the output type.
//!
//! Without a CUDA driver or device the test prints `SKIP: <reason>` and returns,
//! unless `QKC_REQUIRE_GPU` is set (then it fails). `QKC_SEED` fixes the seed (it is
//! printed); `QKC_GPU_QUICK` runs a subset (for `compute-sanitizer`).

mod gpu_common;

use std::sync::Arc;

use gpu_common::*;
use qkc::codegen::lower::{GpuOptions, WeightLoads};
use qkc::runtime::cuda::{CudaDevice, CudaKernel, CudaOptions, PtxSource};
use qkc_dsl::host::random_inputs;
use qkc_dsl::ir::Kernel;

fn device() -> Option<Arc<CudaDevice>> {
    match CudaDevice::new(0) {
        Ok(d) => Some(d),
        Err(e) => {
            if std::env::var_os("QKC_REQUIRE_GPU").is_some() {
                panic!("QKC_REQUIRE_GPU is set but no GPU is usable: {e}");
            }
            println!("SKIP: {e}");
            None
        }
    }
}

fn seed() -> u64 {
    std::env::var("QKC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn quick() -> bool {
    std::env::var_os("QKC_GPU_QUICK").is_some()
}

fn shapes() -> Vec<(u64, u64, u64)> {
    let mut s = vec![(1, 1, 2), (3, 17, 33)];
    for m in 1..=9 {
        s.push((m, 37, 131));
    }
    // Aligned rows (vector path), with and without scalar tails; bigger rows.
    s.extend([
        (1, 67, 512),
        (2, 64, 768),
        (5, 19, 1024),
        (8, 33, 512),
        (9, 9, 512),
        (1, 250, 4096),
        (3, 31, 2592),
        // Long rows: the unrolled loop (8 chunks per lane at M = 1, 4 at M = 2) runs.
        (1, 40, 8704),
        (2, 9, 16640),
    ]);
    if quick() {
        s.retain(|&(m, _, _)| m == 1 || m == 3 || m == 9);
    }
    s
}

fn check_kernel(dev: &Arc<CudaDevice>, k: &Kernel, seed: u64, source: PtxSource) -> Vec<String> {
    let mut fails = check_with(dev, k, seed, source, None);
    // Where the tensor-core GEMV applies (the default runs it for M >= 3): the SIMT
    // GEMV at every M, and the tensor-core path at every M too, loading directly
    // (4 warps per tile), staged through registers (2 warps per tile) and copied to
    // shared memory by cp.async (4 warps per tile).
    let p = qkc::codegen::lower::Plan::new(k);
    if source == PtxSource::Qkc && qkc::codegen::lower::mma::MmaPlan::new(&p).is_some() {
        for (tag, mma, loads, split) in [
            ("mma off", false, WeightLoads::Direct, 4),
            ("mma at every M", true, WeightLoads::Direct, 4),
            ("mma staged, split 2", true, WeightLoads::Shared, 2),
            ("mma cp.async", true, WeightLoads::Async, 4),
        ] {
            let o = GpuOptions {
                mma,
                mma_int: mma,
                mma_loads: loads,
                // Every shape runs the pass's own lowering.
                mma_long_rows: None,
                mma_split: split,
                mma_min_m: 1,
                ..GpuOptions::for_kernel(k)
            };
            fails.extend(
                check_with(dev, k, seed ^ 0x55, source, Some(o))
                    .into_iter()
                    .map(|e| format!("[{tag}] {e}")),
            );
        }
    }
    // The SIMT GEMV's weights loaded directly by each lane (the default copies them
    // to shared memory by cp.async where the lane chunks are whole words).
    if source == PtxSource::Qkc {
        let o = GpuOptions {
            weight_loads: WeightLoads::Direct,
            ..GpuOptions::for_kernel(k)
        };
        fails.extend(
            check_with(dev, k, seed ^ 0x77, source, Some(o))
                .into_iter()
                .map(|e| format!("[weights loaded directly] {e}")),
        );
    }
    fails
}

fn check_with(
    dev: &Arc<CudaDevice>,
    k: &Kernel,
    seed: u64,
    source: PtxSource,
    gpu: Option<GpuOptions>,
) -> Vec<String> {
    let opts = CudaOptions {
        source,
        gpu,
        ..CudaOptions::default()
    };
    let ck = match CudaKernel::new(dev, k, &opts) {
        Ok(c) => c,
        Err(e) => return vec![format!("{}: {e}", k.name)],
    };
    let mut fails = Vec::new();
    for (i, &(m, n, kk)) in shapes().iter().enumerate() {
        let d = dims(k, m, n, kk);
        if !dims_ok(k, &d) {
            continue;
        }
        let inputs = random_inputs(k, &d, seed.wrapping_add(i as u64 * 7919));
        match ck.run(&d, &inputs) {
            Ok(out) => {
                let got = out.to_f64();
                if let Err(e) = check(k, &d, &inputs, &got) {
                    fails.push(format!("{} {:?}: {e}", k.name, (m, n, kk)));
                }
            }
            Err(e) => fails.push(format!("{} {:?}: {e}", k.name, (m, n, kk))),
        }
    }
    fails
}

#[test]
fn gpu_matches_reference() {
    check_all(PtxSource::Qkc);
}

/// The same kernels and shapes through LLVM's NVPTX backend (same loop IR, same launcher).
#[cfg(feature = "llvm")]
#[test]
fn llvm_nvptx_matches_reference() {
    check_all(PtxSource::Llvm);
}

fn check_all(source: PtxSource) {
    let Some(dev) = device() else { return };
    let seed = seed();
    println!(
        "PTX from {source:?}; device: {} ({}), seed {seed}",
        dev.name(),
        dev.arch().name()
    );
    let mut kernels: Vec<Kernel> = example_kernels(env!("CARGO_MANIFEST_DIR"))
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    // Unbounded M: these hold both the GEMV buckets and the generic (M > 8) path.
    kernels.extend(
        generated_kernels()
            .into_iter()
            .filter(|k| k.dims[k.m].max > 8),
    );
    if quick() {
        kernels.retain(|k| {
            k.name.starts_with("gemv")
                || k.name.starts_with("k_q3p5_")
                || k.name.starts_with("k_s3_i8")
        });
    }
    let threads = std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .min(8);
    let fails: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (dev, kernels) = (&dev, &kernels);
                s.spawn(move || {
                    kernels
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .flat_map(|k| check_kernel(dev, k, seed, source))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("test thread"))
            .collect()
    });
    println!(
        "{} kernels × {} shapes checked",
        kernels.len(),
        shapes().len()
    );
    if source == PtxSource::Qkc {
        // Kernels that also ran the tensor-core passes, by operand types.
        let plans: Vec<_> = kernels
            .iter()
            .filter_map(|k| {
                qkc::codegen::lower::mma::MmaPlan::new(&qkc::codegen::lower::Plan::new(k))
            })
            .collect();
        let int = plans.iter().filter(|p| p.is_int()).count();
        println!(
            "tensor-core passes: {} f16 (m16n8k16) and {int} i8 (m16n8k32) kernels",
            plans.len() - int
        );
    }
    assert!(
        fails.is_empty(),
        "{} failures (seed {seed}):\n{}",
        fails.len(),
        fails.join("\n")
    );
}

/// The example kernel `examples/kernels/{name}.qk`.
fn example(name: &str) -> Kernel {
    example_kernel(env!("CARGO_MANIFEST_DIR"), name)
}

/// The device-buffer API: upload once, launch repeatedly, time with events.
#[test]
fn device_buffers_and_timing() {
    let Some(dev) = device() else { return };
    let k = example("gemv_w3p5");
    let ck = CudaKernel::new(&dev, &k, &CudaOptions::default()).expect("compile");
    let d = dims(&k, 1, 1024, 4096);
    let inputs = random_inputs(&k, &d, seed());
    let mut sets = vec![
        ck.upload(&d, &inputs).expect("upload"),
        ck.upload(&d, &inputs).expect("upload"),
    ];
    let times = ck.time(&mut sets, 3, 10).expect("time");
    assert_eq!(times.len(), 10);
    assert!(times.iter().all(|&t| t > 0.0 && t.is_finite()), "{times:?}");
    for s in &sets {
        let out = ck.download(s).expect("download");
        check(&k, &d, &inputs, &out.to_f64()).expect("timed launches computed the right output");
    }
    // A buffer that is too small is an error, not a launch.
    let mut bad = ck.upload(&d, &inputs).expect("upload");
    bad.dims = dims(&k, 1, 2048, 4096);
    assert!(ck.launch(&mut bad).is_err());
}

/// Long rows (K ≥ 2N) launch the bucket's cp.async tensor-core function from M = 2
/// (`GpuOptions::mma_long_rows`), other shapes the default one, and both compute the
/// reference's result.
#[test]
fn long_rows_launch_their_own_function() {
    let Some(dev) = device() else { return };
    let k = example("gemv_f16_w3p5");
    let ck = CudaKernel::new(&dev, &k, &CudaOptions::default()).expect("compile");
    let async_notes =
        |f: &qkc::codegen::loop_ir::Func| f.notes.iter().any(|n| n.contains("cp.async"));
    for (m, n, kk, want) in [
        (2, 64, 1024, true),
        (4, 200, 512, true),
        (1, 64, 1024, false),
        (4, 1024, 1024, false),
    ] {
        let d = dims(&k, m, n, kk);
        let f = ck.func_for(&d).expect("variant");
        assert_eq!(async_notes(f), want, "M={m} N={n} K={kk}: {:?}", f.notes);
        let inputs = random_inputs(&k, &d, seed() ^ m);
        let out = ck.run(&d, &inputs).expect("run");
        check(&k, &d, &inputs, &out.to_f64()).unwrap_or_else(|e| panic!("M={m} N={n} K={kk}: {e}"));
    }
}
