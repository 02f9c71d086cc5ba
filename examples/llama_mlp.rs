//! A Llama-style MLP block with 3.5-bit weights, end to end on the CPU JIT (and on
//! the GPU when one is present):
//!
//! ```text
//! y = W_down · (SiLU(W_gate · x) ⊙ (W_up · x))
//! ```
//!
//! with hidden size H and intermediate size I ≈ 2.69 H (Llama's 11008 / 4096),
//! random Gaussian weights quantized to `q3p5` with f16 scales per group of 128,
//! and the activations quantized to int8 per row before each projection. One
//! kernel type declared with `qkc::quant_kernel!` serves all three projections
//! (its dimensions come from the slice lengths). Reports the relative error of
//! every stage against an f32 reference and the time of a forward pass.
//!
//! ```text
//! cargo run --release --example llama_mlp [-- --hidden 4096] [--tokens 4] [--mse]
//! ```

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qkc::dsl::host::HostBuf;
use qkc::dsl::ir::Dims;
use qkc::half::f16;
use qkc::runtime::cuda::CudaDevice;
use qkc::runtime::quantize::{
    quantize, QuantConfig, QuantizedTensor, ScaleDtype, ScaleSearch, Scales,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

qkc::quant_kernel! {
    /// One projection: int8 activations (one f32 scale per token) × 3.5-bit weights
    /// with f16 scales per group of 128 along the input features.
    pub Proj35 = kernel proj_w3p5(x: i8[T, D], xs: f32[T], w: q3p5[F, D], ws: f16[F, D / 128]) -> y: f32[T, F] {
        where T <= 8;
        schedule { tile_n = 4; threads = 128; }
        y[t, f] = sum(d) x[t, d] * w[f, d] * ws[f, d / 128] * xs[t];
    }
}

/// A quantized projection: `[out, in]` weights, packed codes and f16 scales.
struct Layer {
    name: &'static str,
    out: usize,
    inp: usize,
    f32: Vec<f32>,
    q: QuantizedTensor,
    scales: Vec<f16>,
}

impl Layer {
    fn new(
        name: &'static str,
        out: usize,
        inp: usize,
        search: ScaleSearch,
        rng: &mut StdRng,
    ) -> Result<Layer, Box<dyn Error>> {
        let w = normal(rng, out * inp, 0.02);
        let cfg = QuantConfig::new(Proj35::WEIGHT_LAYOUT)
            .with_group(128)
            .with_scale_dtype(ScaleDtype::F16)
            .with_search(search);
        let q = quantize(&w, out, inp, &cfg)?;
        let Scales::F16(scales) = q.scales.clone() else {
            return Err("expected f16 scales".into());
        };
        Ok(Layer {
            name,
            out,
            inp,
            f32: w,
            q,
            scales,
        })
    }
}

/// Standard normal samples (Box–Muller) times `sigma`.
fn normal(rng: &mut StdRng, n: usize, sigma: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let v: f32 = rng.random();
            sigma * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect()
}

/// Symmetric int8 quantization per row: `x ≈ xs[t] * xq[t, d]`.
fn quantize_rows(x: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(x.len());
    let mut scales = Vec::with_capacity(x.len() / cols);
    for row in x.chunks(cols) {
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

fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// `y[t, o] = Σ_i x[t, i] w[o, i]` in f64 (the f32 reference).
fn matmul_ref(x: &[f32], l: &Layer) -> Vec<f32> {
    let tokens = x.len() / l.inp;
    let mut y = vec![0f32; tokens * l.out];
    for t in 0..tokens {
        let xr = &x[t * l.inp..(t + 1) * l.inp];
        for o in 0..l.out {
            let wr = &l.f32[o * l.inp..(o + 1) * l.inp];
            y[t * l.out + o] = xr
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

/// Intermediate activations of one forward pass.
struct Forward {
    gate: Vec<f32>,
    up: Vec<f32>,
    h: Vec<f32>,
    y: Vec<f32>,
}

/// The block on quantized weights; `proj` runs one projection (CPU or GPU).
fn forward(
    x: &[f32],
    layers: &[Layer; 3],
    mut proj: impl FnMut(&[i8], &[f32], &Layer) -> Result<Vec<f32>, Box<dyn Error>>,
) -> Result<Forward, Box<dyn Error>> {
    let [gate_l, up_l, down_l] = layers;
    let (xq, xs) = quantize_rows(x, gate_l.inp);
    let gate = proj(&xq, &xs, gate_l)?;
    let up = proj(&xq, &xs, up_l)?;
    let h: Vec<f32> = gate.iter().zip(&up).map(|(g, u)| silu(*g) * u).collect();
    let (hq, hs) = quantize_rows(&h, down_l.inp);
    let y = proj(&hq, &hs, down_l)?;
    Ok(Forward { gate, up, h, y })
}

fn report(what: &str, got: &Forward, want: &Forward) {
    println!(
        "{what}: relative error gate {:.4}, up {:.4}, SiLU(gate)*up {:.4}, output {:.4}",
        rel_err(&got.gate, &want.gate),
        rel_err(&got.up, &want.up),
        rel_err(&got.h, &want.h),
        rel_err(&got.y, &want.y)
    );
}

/// Median wall time of `reps` forward passes (after one warm-up), seconds.
fn time_forward(
    reps: usize,
    mut f: impl FnMut() -> Result<(), Box<dyn Error>>,
) -> Result<f64, Box<dyn Error>> {
    f()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

const USAGE: &str = "usage: llama_mlp [--hidden H] [--tokens T] [--mse]";

fn parse_args() -> Result<(usize, usize, ScaleSearch), Box<dyn Error>> {
    let (mut hidden, mut tokens, mut search) = (2048usize, 4usize, ScaleSearch::AbsMax);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mse" => search = ScaleSearch::Mse,
            "--hidden" | "--tokens" => {
                let value: usize = args
                    .next()
                    .ok_or(format!("{a} needs a value; {USAGE}"))?
                    .parse()?;
                if a == "--hidden" {
                    hidden = value;
                } else {
                    tokens = value;
                }
            }
            _ => return Err(format!("unknown argument {a}; {USAGE}").into()),
        }
    }
    if hidden == 0 || hidden % 128 != 0 {
        return Err("--hidden must be a positive multiple of 128".into());
    }
    if !(1..=8).contains(&tokens) {
        return Err("--tokens must be in 1..=8 (the kernel's `where T <= 8`)".into());
    }
    Ok((hidden, tokens, search))
}

fn main() -> Result<(), Box<dyn Error>> {
    let (hidden, tokens, search) = parse_args()?;
    // Llama's ratio 11008 / 4096, rounded to a multiple of the group size.
    let inter = (hidden as f64 * 11008.0 / 4096.0 / 128.0).round() as usize * 128;
    println!(
        "Llama-style MLP: hidden {hidden}, intermediate {inter}, {tokens} tokens, q3p5 weights (group 128, f16 scales, {} scales)",
        if search == ScaleSearch::Mse { "MSE-searched" } else { "absmax" }
    );

    let mut rng = StdRng::seed_from_u64(7);
    let t = Instant::now();
    let layers = [
        Layer::new("gate", inter, hidden, search, &mut rng)?,
        Layer::new("up", inter, hidden, search, &mut rng)?,
        Layer::new("down", hidden, inter, search, &mut rng)?,
    ];
    let weights: usize = layers.iter().map(|l| l.out * l.inp).sum();
    let bytes: usize = layers
        .iter()
        .map(|l| l.q.codes_packed.len() + l.q.scales.byte_len())
        .sum();
    println!(
        "weights: {:.1} M parameters quantized in {:.2} s: {:.1} MB ({:.3} bits/weight incl. scales; f32 would be {:.1} MB)",
        weights as f64 / 1e6,
        t.elapsed().as_secs_f64(),
        bytes as f64 / 1e6,
        bytes as f64 * 8.0 / weights as f64,
        weights as f64 * 4.0 / 1e6
    );
    for l in &layers {
        println!(
            "  {:>4}: [{}, {}] → {} packed bytes",
            l.name,
            l.out,
            l.inp,
            l.q.codes_packed.len()
        );
    }
    let x = normal(&mut rng, tokens * hidden, 1.0);

    // f32 reference.
    let reference = {
        let gate = matmul_ref(&x, &layers[0]);
        let up = matmul_ref(&x, &layers[1]);
        let h: Vec<f32> = gate.iter().zip(&up).map(|(g, u)| silu(*g) * u).collect();
        let y = matmul_ref(&h, &layers[2]);
        Forward { gate, up, h, y }
    };

    // CPU JIT.
    let t = Instant::now();
    let cpu = Proj35::cpu()?;
    println!(
        "CPU JIT: compiled in {:.1} ms, {} threads",
        t.elapsed().as_secs_f64() * 1e3,
        cpu.inner().threads()
    );
    let cpu_proj = |xq: &[i8], xs: &[f32], l: &Layer| -> Result<Vec<f32>, Box<dyn Error>> {
        Ok(cpu.run(xq, xs, &l.q.codes_packed, &l.scales)?)
    };
    let out = forward(&x, &layers, cpu_proj)?;
    report("CPU", &out, &reference);
    let secs = time_forward(10, || forward(&x, &layers, cpu_proj).map(|_| ()))?;
    println!(
        "CPU forward: {:.2} ms ({:.1} GB/s of weights; the typed `run` copies each slice once)",
        secs * 1e3,
        bytes as f64 / secs / 1e9
    );
    // The three projections alone, on prebuilt host buffers (no copies).
    let mut kernel_s = 0.0;
    for l in &layers {
        let rows = tokens * l.inp;
        let (xq, xs) = quantize_rows(
            &x.iter().cycle().take(rows).copied().collect::<Vec<_>>(),
            l.inp,
        );
        let bufs = vec![
            HostBuf::I8(xq),
            HostBuf::F32(xs),
            HostBuf::Packed(l.q.codes_packed.clone()),
            HostBuf::F16(l.scales.clone()),
        ];
        let dims = Dims {
            values: vec![tokens as u64, l.inp as u64, l.out as u64],
        };
        let (_, timing) = cpu
            .inner()
            .time(&dims, &bufs, 10, Duration::from_millis(300))?;
        kernel_s += timing.median;
    }
    println!(
        "CPU projections alone: {:.2} ms ({:.1} GB/s of weights)",
        kernel_s * 1e3,
        bytes as f64 / kernel_s / 1e9
    );

    // GPU when present.
    match CudaDevice::new(0) {
        Err(e) => println!("GPU: skipped ({e})"),
        Ok(dev) => gpu(&dev, &x, &layers, &reference, bytes)?,
    }
    Ok(())
}

fn gpu(
    dev: &Arc<CudaDevice>,
    x: &[f32],
    layers: &[Layer; 3],
    reference: &Forward,
    bytes: usize,
) -> Result<(), Box<dyn Error>> {
    let gpu = Proj35::cuda(dev)?;
    let gpu_proj = |xq: &[i8], xs: &[f32], l: &Layer| -> Result<Vec<f32>, Box<dyn Error>> {
        Ok(gpu.run(xq, xs, &l.q.codes_packed, &l.scales)?)
    };
    let out = forward(x, layers, gpu_proj)?;
    report(&format!("GPU ({})", dev.name()), &out, reference);
    let secs = time_forward(10, || forward(x, layers, gpu_proj).map(|_| ()))?;
    println!(
        "GPU forward: {:.2} ms (host → device copies of the weights included)",
        secs * 1e3
    );
    // The projections alone, weights resident on the device.
    let mut kernel_us = 0.0;
    for l in layers {
        let (xq, xs) = quantize_rows(&vec![0.5; x.len() / layers[0].inp * l.inp], l.inp);
        let mut args = gpu.upload(&xq, &xs, &l.q.codes_packed, &l.scales)?;
        let mut t = gpu.inner().time(std::slice::from_mut(&mut args), 10, 100)?;
        t.sort_by(f64::total_cmp);
        kernel_us += t.get(t.len() / 2).copied().unwrap_or(f64::NAN);
    }
    println!(
        "GPU projections, weights resident: {:.1} µs ({:.0} GB/s of weights)",
        kernel_us,
        bytes as f64 / (kernel_us * 1e-6) / 1e9
    );
    Ok(())
}
