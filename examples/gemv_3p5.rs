//! A 3.5-bit GEMV declared with `qkc::quant_kernel!`: random f32 weights are
//! quantized to `q3p5` (f16 scales per group of 128) with the runtime quantizer,
//! activations to int8 per row; the kernel runs on the CPU JIT through its typed
//! `run`, is checked against the reference interpreter (`qkc::dsl::interp`) and
//! against the f32 product of the unquantized data, and runs on the GPU when one
//! is present.
//!
//! ```text
//! cargo run --release --example gemv_3p5 [-- M K N]     (default 1 4096 4096)
//! ```

use std::error::Error;
use std::time::{Duration, Instant};

use qkc::dsl::host::HostBuf;
use qkc::runtime::cpu::compare_with_reference;
use qkc::runtime::quantize::{error_metrics, quantize, QuantConfig, ScaleDtype, Scales};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

qkc::quant_kernel! {
    /// int8 activations × 3.5-bit weights (a signed 4-bit and a signed 3-bit code in
    /// 7 bits, streamed), f16 weight scales per group of 128, f32 scale per row.
    pub Gemv35 = kernel gemv_w3p5(x: i8[M, K], xs: f32[M], w: q3p5[N, K], ws: f16[N, K / 128]) -> y: f32[M, N] {
        where M <= 8;
        schedule { tile_n = 4; threads = 128; }
        y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128] * xs[m];
    }
}

/// Standard normal samples (Box–Muller).
fn normal(rng: &mut StdRng, n: usize, sigma: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let v: f32 = rng.random();
            sigma * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect()
}

/// Symmetric int8 quantization per row: `x ≈ xs[m] * xq[m, k]`.
fn quantize_rows(x: &[f32], m: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(m * k);
    let mut scales = Vec::with_capacity(m);
    for row in x.chunks(k) {
        let amax = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        q.extend(
            row.iter()
                .map(|v| (v / s).round().clamp(-127.0, 127.0) as i8),
        );
        scales.push(s);
    }
    (q, scales)
}

/// `y[m, n] = Σ_k x[m, k] w[n, k]` in f64.
fn matmul_f64(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let xr = &x[i * k..(i + 1) * k];
            let wr = &w[j * k..(j + 1) * k];
            y[i * n + j] = xr
                .iter()
                .zip(wr)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>() as f32;
        }
    }
    y
}

/// `‖a − b‖ / ‖b‖`.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

fn median_time(mut f: impl FnMut() -> Result<(), Box<dyn Error>>) -> Result<f64, Box<dyn Error>> {
    f()?;
    let mut t = Vec::new();
    let start = Instant::now();
    while t.len() < 5 || (start.elapsed() < Duration::from_millis(500) && t.len() < 200) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("usage: gemv_3p5 [M K N]: {e}"))?;
    let (m, k, n) = match args[..] {
        [] => (1, 4096, 4096),
        [m, k, n] => (m, k, n),
        _ => return Err("usage: gemv_3p5 [M K N]".into()),
    };
    println!("{}", Gemv35::SOURCE);
    println!("M = {m}, K = {k}, N = {n}");

    // Data: Gaussian weights (σ = 0.02) and activations (σ = 1).
    let mut rng = StdRng::seed_from_u64(2024);
    let w = normal(&mut rng, n * k, 0.02);
    let x = normal(&mut rng, m * k, 1.0);

    // Quantize: weights to q3p5 with f16 group scales, activations to int8 per row.
    let cfg = QuantConfig::new(Gemv35::WEIGHT_LAYOUT)
        .with_group(128)
        .with_scale_dtype(ScaleDtype::F16);
    let t = Instant::now();
    let qw = quantize(&w, n, k, &cfg)?;
    let quant_s = t.elapsed().as_secs_f64();
    let Scales::F16(ws) = &qw.scales else {
        return Err("expected f16 scales".into());
    };
    let deq = qw.dequantize()?;
    let wm = error_metrics(&w, &deq)?;
    println!(
        "weights: {:.3} bits/weight incl. scales, SNR {:.1} dB, quantized in {:.1} ms",
        qw.bits_per_weight(),
        wm.snr_db,
        quant_s * 1e3
    );
    let (xq, xs) = quantize_rows(&x, m, k);

    // CPU JIT through the typed API: dims come from the slice lengths.
    let t = Instant::now();
    let cpu = Gemv35::cpu()?;
    println!(
        "CPU JIT: compiled in {:.1} ms, {} threads",
        t.elapsed().as_secs_f64() * 1e3,
        cpu.inner().threads()
    );
    let y = cpu.run(&xq, &xs, &qw.codes_packed, ws)?;

    // 1. Against the reference interpreter on the same quantized inputs.
    let kernel = Gemv35::kernel()?;
    let dims = qkc::dsl::ir::Dims {
        values: vec![m as u64, k as u64, n as u64],
    };
    let bufs = vec![
        HostBuf::I8(xq.clone()),
        HostBuf::F32(xs.clone()),
        HostBuf::Packed(qw.codes_packed.clone()),
        HostBuf::F16(ws.clone()),
    ];
    let reference = qkc::dsl::interp::run(&kernel, &dims, &bufs)?;
    let HostBuf::F32(y_ref) = &reference else {
        return Err("the interpreter returned a non-f32 output".into());
    };
    let max_abs = y
        .iter()
        .zip(y_ref)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let c = compare_with_reference(&kernel, &dims, &bufs, &HostBuf::F32(y.clone()))?;
    println!(
        "vs interpreter: max |Δ| = {max_abs:.3e}, max |Δ|/Σ|terms| = {:.2e}, {} of {} outside tolerance",
        c.max_rel, c.failures, c.count
    );
    if !c.passed() {
        return Err("the CPU JIT disagrees with the reference interpreter".into());
    }

    // 2. Against the f32 product of the unquantized data.
    let y_f32 = matmul_f64(&x, &w, m, k, n);
    let y_wq = matmul_f64(&x, &deq, m, k, n);
    println!(
        "vs f32 product: relative error {:.4} (weights alone: {:.4}; int8 activations add the rest)",
        rel_err(&y, &y_f32),
        rel_err(&y_wq, &y_f32)
    );

    // Timing: the typed run (copies the slices into host buffers) and the kernel alone.
    let typed = median_time(|| {
        cpu.run(&xq, &xs, &qw.codes_packed, ws)?;
        Ok(())
    })?;
    let (_, timing) = cpu
        .inner()
        .time(&dims, &bufs, 5, Duration::from_millis(500))?;
    let bytes = kernel.weight_bytes(&dims) as f64;
    println!(
        "CPU time: kernel {:.3} ms ({:.1} GB/s of weights), typed run {:.3} ms",
        timing.median * 1e3,
        bytes / timing.median / 1e9,
        typed * 1e3
    );

    // GPU when present.
    match qkc::runtime::cuda::CudaDevice::new(0) {
        Err(e) => println!("GPU: skipped ({e})"),
        Ok(dev) => {
            let gpu = Gemv35::cuda(&dev)?;
            let y_gpu = gpu.run(&xq, &xs, &qw.codes_packed, ws)?;
            let c = compare_with_reference(&kernel, &dims, &bufs, &HostBuf::F32(y_gpu))?;
            let mut args = gpu.upload(&xq, &xs, &qw.codes_packed, ws)?;
            let times = gpu.inner().time(std::slice::from_mut(&mut args), 10, 100)?;
            let mut t = times.clone();
            t.sort_by(f64::total_cmp);
            let us = t.get(t.len() / 2).copied().unwrap_or(f64::NAN);
            println!(
                "GPU ({}): {} of {} outside tolerance, kernel {:.1} µs ({:.0} GB/s of weights)",
                dev.name(),
                c.failures,
                c.count,
                us,
                bytes / (us * 1e-6) / 1e9
            );
        }
    }
    Ok(())
}
