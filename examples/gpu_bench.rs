//! GPU GEMV benchmark for the 3.5-bit kernel (or any `.qk` kernel): median time of many
//! launches timed with CUDA events, the weights rotated across several device copies
//! so that L2 (60 MB on an H200) cannot serve them, achieved GB/s of weight bytes
//! (packed codes + weight-indexed scales) and the fraction of the read ceiling.
//!
//! ```text
//! cargo run --release --example gpu_bench -- [--kernel examples/kernels/gemv_w3p5.qk]
//!     [--shapes 8192x8192,8192x28672,28672x8192,14336x4096] [--m 1,4,8]
//!     [--copies 8] [--iters 200] [--peak 4.24] [--no-check]
//! ```
//! Shapes are K×N (K the reduction). Every shape is first checked against the
//! reference interpreter (M = 1) unless `--no-check`.

use half::{bf16, f16};
use qkc::dsl::host::{HostBuf, Rng};
use qkc::dsl::interp;
use qkc::dsl::ir::{Dims, ElemType, Kernel, Role, Scalar, ScaleIndex};
use qkc::runtime::cuda::{CudaDevice, CudaKernel, CudaOptions};

struct Args {
    kernel: String,
    shapes: Vec<(u64, u64)>,
    ms: Vec<u64>,
    copies: usize,
    iters: usize,
    peak: f64,
    check: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        kernel: concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kernels/gemv_w3p5.qk").to_string(),
        shapes: vec![(8192, 8192), (8192, 28672), (28672, 8192), (14336, 4096)],
        ms: vec![1, 4, 8],
        copies: 8,
        iters: 200,
        peak: 4.24,
        check: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--kernel" => a.kernel = val()?,
            "--shapes" => {
                a.shapes = val()?
                    .split(',')
                    .map(|s| {
                        let (k, n) = s.split_once('x').ok_or(format!("bad shape {s}: write KxN"))?;
                        Ok((k.parse().map_err(|_| format!("bad K in {s}"))?, n.parse().map_err(|_| format!("bad N in {s}"))?))
                    })
                    .collect::<Result<_, String>>()?
            }
            "--m" => a.ms = val()?.split(',').map(|s| s.parse().map_err(|_| format!("bad M {s}"))).collect::<Result<_, _>>()?,
            "--copies" => a.copies = val()?.parse().map_err(|_| "bad --copies")?,
            "--iters" => a.iters = val()?.parse().map_err(|_| "bad --iters")?,
            "--peak" => a.peak = val()?.parse().map_err(|_| "bad --peak")?,
            "--no-check" => a.check = false,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// Random inputs, fast for large weights: packed weights are random bytes (every bit
/// pattern is a valid code), the rest as `random_inputs` draws them.
fn inputs(k: &Kernel, d: &Dims, seed: u64) -> Vec<HostBuf> {
    let mut rng = Rng::new(seed);
    k.inputs
        .iter()
        .map(|p| {
            let len = k.buffer_len(&p.tensor, d);
            let (lo, hi) = match p.role {
                Role::Scale(ScaleIndex::Row | ScaleIndex::RowGroup) => (0.5 / 64.0, 1.5 / 64.0),
                Role::Scale(_) => (0.5 / 16.0, 1.5 / 16.0),
                _ => (-1.0, 1.0),
            };
            match &p.tensor.ty {
                ElemType::Packed { .. } => {
                    let mut v = Vec::with_capacity(len + 8);
                    while v.len() < len {
                        v.extend_from_slice(&rng.next_u64().to_le_bytes());
                    }
                    v.truncate(len);
                    HostBuf::Packed(v)
                }
                ElemType::Scalar(Scalar::I8) => HostBuf::I8((0..len).map(|_| rng.next_u64() as i8).collect()),
                ElemType::Scalar(Scalar::I32) => HostBuf::I32((0..len).map(|_| rng.range_i32(-1000, 1000)).collect()),
                ElemType::Scalar(Scalar::F16) => HostBuf::F16((0..len).map(|_| f16::from_f32(rng.range_f32(lo, hi))).collect()),
                ElemType::Scalar(Scalar::BF16) => HostBuf::BF16((0..len).map(|_| bf16::from_f32(rng.range_f32(lo, hi))).collect()),
                ElemType::Scalar(Scalar::F32) => HostBuf::F32((0..len).map(|_| rng.range_f32(lo, hi)).collect()),
            }
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), String> {
    let a = parse()?;
    let dev = match CudaDevice::new(0) {
        Ok(d) => d,
        Err(e) => {
            println!("SKIP: {e}");
            return Ok(());
        }
    };
    let src = std::fs::read_to_string(&a.kernel).map_err(|e| format!("{}: {e}", a.kernel))?;
    let prog = qkc::dsl::compile(&a.kernel, &src).map_err(|e| format!("{e:?}"))?;
    let k = prog.kernels.first().ok_or("no kernel in the file")?.clone();
    let ck = CudaKernel::new(&dev, &k, &CudaOptions::default()).map_err(|e| e.to_string())?;
    println!("device: {} ({})", dev.name(), dev.arch().name());
    match dev.copy_bandwidth(1 << 31) {
        Ok(bw) => println!("device-to-device copy: {:.2} TB/s (read + write)", bw / 1e12),
        Err(e) => println!("copy ceiling not measured: {e}"),
    }
    println!("kernel {}: weight layout {}", k.name, k.weight_layout());
    let mut rows = Vec::new();
    for &(kk, n) in &a.shapes {
        for &m in &a.ms {
            let d = Dims {
                values: {
                    let mut v = vec![0; k.dims.len()];
                    v[k.m] = m;
                    v[k.n] = n;
                    v[k.k] = kk;
                    v
                },
            };
            if let Err(e) = k.validate_dims(&d) {
                println!("skip {kk}x{n} M={m}: {e}");
                continue;
            }
            let host = inputs(&k, &d, 42 + m);
            let mut sets = Vec::new();
            for _ in 0..a.copies.max(1) {
                sets.push(ck.upload(&d, &host).map_err(|e| e.to_string())?);
            }
            if a.check && m == a.ms[0] {
                ck.launch(&mut sets[0]).map_err(|e| e.to_string())?;
                let got = ck.download(&sets[0]).map_err(|e| e.to_string())?.to_f64();
                let want = interp::run_f64(&k, &d, &host).map_err(|e| e.to_string())?;
                let mag = interp::magnitude(&k, &d, &host).map_err(|e| e.to_string())?;
                let tol = (kk as f64 + 64.0) * 2f64.powi(-24);
                let worst = got
                    .iter()
                    .zip(&want)
                    .zip(&mag)
                    .map(|((g, w), m)| if g.is_finite() { (g - w).abs() / m.max(1e-30) } else { f64::INFINITY })
                    .fold(0.0, f64::max);
                if worst > tol {
                    return Err(format!("{kk}x{n} M={m}: wrong output (worst error / magnitude {worst:.3e} > {tol:.3e})"));
                }
                println!("checked {kk}x{n} M={m} against the reference: worst error / magnitude {worst:.2e}");
            }
            let mut t = ck.time(&mut sets, 20, a.iters).map_err(|e| e.to_string())?;
            let med = median(&mut t);
            let min = t[0];
            let wb = k.weight_bytes(&d) as f64;
            let gbs = wb / (med * 1e-6) / 1e9;
            rows.push(format!(
                "| {kk}x{n} | {m} | {med:.1} | {min:.1} | {:.1} | {gbs:.0} | {:.2} |",
                wb / (a.peak * 1e12) * 1e6,
                gbs / (a.peak * 1e3)
            ));
        }
    }
    println!("\n| K×N | M | median µs | min µs | floor µs | weight GB/s | of {} TB/s |", a.peak);
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
