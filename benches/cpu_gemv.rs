//! CPU benchmark: qkc's 3.5-bit GEMV/GEMM on the Cranelift JIT (and LLVM when built
//! with `--features llvm`) side by side with candle's quantized matmul (Q3K, Q4K,
//! Q4_0; `--features candle`), a plain f32 Rust loop and the reference interpreter,
//! in one run, on the same shapes and thread count.
//!
//! Every timed call reads a different copy of the weights (at least 8 copies, and
//! at least 96 MiB of them, so a 4096² matrix cannot sit in the 32 MiB L3); each
//! entry is warmed up first and reported as the median of its runs. The machine's
//! read bandwidth is measured in the same run. Prints a table and writes an SVG plot
//! to `target/qkc-bench/cpu_gemv.svg`.
//!
//! ```sh
//! cargo bench --bench cpu_gemv --features candle            # full run
//! QKC_BENCH_QUICK=1 cargo bench --bench cpu_gemv            # one shape, few runs
//! QKC_BENCH_SHAPES=1x8192,16x4096 cargo bench --bench cpu_gemv --features candle,llvm
//! ```

use std::time::Instant;

use plotters::prelude::*;
use qkc::dsl::host::{random_inputs, HostBuf, Rng};
use qkc::dsl::ir::{Dims, Kernel};
use qkc::runtime::cpu::{CpuKernel, CpuOptions};
use rayon::prelude::*;

const KERNEL: &str = include_str!("../examples/kernels/gemv_w3p5.qk");

/// One measured entry.
struct Row {
    shape: (usize, usize, usize),
    name: String,
    secs: f64,
    weight_bytes: f64,
}

fn threads() -> usize {
    std::env::var("QKC_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Times `f(copy)` over rotating copies: `warm` untimed calls, then `runs` timed ones.
fn time_rotating(copies: usize, warm: usize, runs: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..warm {
        f(i % copies);
    }
    let mut t = Vec::with_capacity(runs);
    for i in 0..runs {
        let s = Instant::now();
        f(i % copies);
        t.push(s.elapsed().as_secs_f64());
    }
    median(t)
}

/// Read bandwidth of this machine: every thread sums its share of a 1 GiB buffer.
fn read_bandwidth(pool: &rayon::ThreadPool) -> f64 {
    let words = (1usize << 30) / 8;
    let buf: Vec<u64> = (0..words as u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9))
        .collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let s = Instant::now();
        let sum: u64 = pool.install(|| {
            buf.par_chunks(1 << 16)
                .map(|c| c.iter().fold(0u64, |a, &x| a ^ x))
                .reduce(|| 0, |a, b| a ^ b)
        });
        let secs = s.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        best = best.max((words * 8) as f64 / secs);
    }
    best
}

fn copies_for(bytes: usize) -> usize {
    8.max((96usize << 20).div_ceil(bytes.max(1)))
}

fn bench_qkc(
    k: &Kernel,
    shape: (usize, usize, usize),
    runs: usize,
    rows: &mut Vec<Row>,
    pool_threads: usize,
) {
    let (m, n, kk) = shape;
    let mut dims = Dims { values: vec![0; 3] };
    dims.values[k.m] = m as u64;
    dims.values[k.n] = n as u64;
    dims.values[k.k] = kk as u64;
    let base = random_inputs(k, &dims, 11);
    let wb = k.weight_bytes(&dims);
    let copies = copies_for(wb);
    // Rotate the weight and its scales; activations stay the same.
    let sets: Vec<Vec<HostBuf>> = (0..copies)
        .map(|c| {
            let fresh = random_inputs(k, &dims, 1000 + c as u64);
            base.iter()
                .zip(fresh)
                .enumerate()
                .map(|(i, (b, f))| if i == k.act { b.clone() } else { f })
                .collect()
        })
        .collect();
    // The reference output of the first weight copy (M = 1 and small shapes only: the
    // interpreter takes seconds beyond), which every qkc entry must match before it is
    // timed.
    let want: Option<Vec<f64>> = (m * n * kk <= 8192 * 8192)
        .then(|| qkc::dsl::interp::run(k, &dims, &sets[0]).ok())
        .flatten()
        .map(|o| o.to_f64());
    let matches = |label: &str, got: &HostBuf| -> bool {
        let Some(w) = &want else { return true };
        let g = got.to_f64();
        let worst = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0f64, f64::max);
        if worst > 1e-4 {
            eprintln!(
                "{label}: WRONG: max relative error {worst:.2e} against the reference; not timed"
            );
        } else {
            println!("{label}: max relative error {worst:.1e} against the reference");
        }
        worst <= 1e-4
    };
    for (label, simd) in [
        ("qkc cranelift simd", true),
        ("qkc cranelift scalar", false),
    ] {
        let mut opts = CpuOptions::for_kernel(k);
        opts.jit.simd = simd;
        opts.threads = pool_threads;
        let ck = match CpuKernel::new(k, &opts) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{label}: cannot compile: {e}");
                continue;
            }
        };
        let mut out = match ck.output_for(&dims) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("{label}: {e}");
                continue;
            }
        };
        // Check against the reference before timing anything.
        if let Err(e) = ck.run_into(&dims, &sets[0], &mut out) {
            eprintln!("{label}: {e}");
            continue;
        }
        if !matches(label, &out) {
            continue;
        }
        let secs = time_rotating(copies, 3, runs, |c| {
            if let Err(e) = ck.run_into(&dims, &sets[c], &mut out) {
                eprintln!("{label}: {e}");
            }
        });
        rows.push(Row {
            shape,
            name: label.into(),
            secs,
            weight_bytes: wb as f64,
        });
    }
    #[cfg(feature = "llvm")]
    {
        use qkc::runtime::llvm_cpu::{LlvmCpuKernel, LlvmCpuOptions};
        let mut lo = LlvmCpuOptions::for_kernel(k);
        lo.threads = pool_threads;
        match LlvmCpuKernel::new(k, &lo) {
            Ok(lk) => {
                let mut out =
                    qkc::dsl::host::HostBuf::zeros(&k.output.ty, k.buffer_len(&k.output, &dims));
                if let Err(e) = lk.run_into(&dims, &sets[0], &mut out) {
                    eprintln!("qkc llvm-cpu: {e}");
                    return;
                }
                if !matches("qkc llvm-cpu", &out) {
                    return;
                }
                let secs = time_rotating(copies, 3, runs, |c| {
                    if let Err(e) = lk.run_into(&dims, &sets[c], &mut out) {
                        eprintln!("llvm: {e}");
                    }
                });
                rows.push(Row {
                    shape,
                    name: "qkc llvm-cpu".into(),
                    secs,
                    weight_bytes: wb as f64,
                });
            }
            Err(e) => eprintln!("qkc llvm-cpu: {e}"),
        }
    }
    if shape == (1, 4096, 4096) {
        let secs = time_rotating(copies, 0, 3, |c| {
            let _ = qkc::dsl::interp::run(k, &dims, &sets[c]);
        });
        rows.push(Row {
            shape,
            name: "reference interpreter".into(),
            secs,
            weight_bytes: wb as f64,
        });
    }
}

fn bench_f32(
    shape: (usize, usize, usize),
    runs: usize,
    rows: &mut Vec<Row>,
    pool: &rayon::ThreadPool,
) {
    let (m, n, k) = shape;
    let wb = n * k * 4;
    let copies = 8
        .max((96usize << 20).div_ceil(wb))
        .min(((4usize << 30) / wb).max(2));
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..m * k).map(|_| rng.range_f32(-1.0, 1.0)).collect();
    let ws: Vec<Vec<f32>> = (0..copies)
        .map(|_| (0..n * k).map(|_| rng.range_f32(-1.0, 1.0)).collect())
        .collect();
    let mut y = vec![0f32; m * n];
    let secs = time_rotating(copies, 2, runs, |c| {
        let w = &ws[c];
        pool.install(|| {
            // y[m, n] = Σ_k x[m, k] w[n, k]: rows of W split across threads.
            let mut yt = vec![0f32; n * m];
            yt.par_chunks_mut(m).enumerate().for_each(|(nn, out)| {
                let wr = &w[nn * k..(nn + 1) * k];
                for (mm, o) in out.iter_mut().enumerate() {
                    let xr = &x[mm * k..(mm + 1) * k];
                    *o = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
                }
            });
            for nn in 0..n {
                for mm in 0..m {
                    y[mm * n + nn] = yt[nn * m + mm];
                }
            }
        });
        std::hint::black_box(&y);
    });
    rows.push(Row {
        shape,
        name: "f32 rust loop".into(),
        secs,
        weight_bytes: wb as f64,
    });
}

#[cfg(feature = "candle")]
fn bench_candle(shape: (usize, usize, usize), runs: usize, rows: &mut Vec<Row>) {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};
    let (m, n, k) = shape;
    let dev = Device::Cpu;
    for (name, dt) in [
        ("candle Q3K", GgmlDType::Q3K),
        ("candle Q4K", GgmlDType::Q4K),
        ("candle Q4_0", GgmlDType::Q4_0),
    ] {
        let bytes_per_block = dt.type_size() as f64 / dt.block_size() as f64;
        let wb = (n * k) as f64 * bytes_per_block;
        let copies = copies_for(wb as usize);
        let mut mms = Vec::new();
        for c in 0..copies {
            let w = match Tensor::randn(0f32, 1.0, (n, k), &dev) {
                Ok(w) => w,
                Err(e) => return eprintln!("candle: {e}"),
            };
            let _ = c;
            match QTensor::quantize(&w, dt).and_then(QMatMul::from_qtensor) {
                Ok(q) => mms.push(q),
                Err(e) => return eprintln!("{name}: {e}"),
            }
        }
        let x = match Tensor::randn(0f32, 1.0, (m, k), &dev) {
            Ok(x) => x,
            Err(e) => return eprintln!("candle: {e}"),
        };
        let secs = time_rotating(copies, 3, runs, |c| match mms[c].forward(&x) {
            Ok(y) => {
                std::hint::black_box(y);
            }
            Err(e) => eprintln!("{name}: {e}"),
        });
        rows.push(Row {
            shape,
            name: name.into(),
            secs,
            weight_bytes: wb,
        });
    }
}

fn plot(
    rows: &[Row],
    shapes: &[(usize, usize, usize)],
    path: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let names: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for r in rows {
            if !v.contains(&r.name) {
                v.push(r.name.clone());
            }
        }
        v
    };
    let max = rows
        .iter()
        .map(|r| (r.shape.1 * r.shape.2) as f64 / r.secs / 1e9)
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (1100, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let groups = shapes.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "qkc CPU GEMV/GEMM: Gweights/s (higher is better)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..groups as f64, 0f64..max * 1.15)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            shapes
                .get(i)
                .map(|s| format!("M={} N=K={}", s.0, s.1))
                .unwrap_or_default()
        })
        .y_desc("Gweights/s")
        .draw()?;
    let w = 0.8 / names.len() as f64;
    for (ni, name) in names.iter().enumerate() {
        let color = Palette99::pick(ni).to_rgba();
        let bars: Vec<Rectangle<(f64, f64)>> = rows
            .iter()
            .filter(|r| &r.name == name)
            .filter_map(|r| {
                let si = shapes.iter().position(|s| *s == r.shape)?;
                let x0 = si as f64 + 0.1 + ni as f64 * w;
                let gw = (r.shape.1 * r.shape.2) as f64 / r.secs / 1e9;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + w * 0.9, gw)],
                    color.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

/// `MxN` (N = K), e.g. `1x8192`.
fn parse_shape(s: &str) -> Option<(usize, usize, usize)> {
    let (m, n) = s.trim().split_once('x')?;
    let (m, n) = (m.parse().ok()?, n.parse().ok()?);
    Some((m, n, n))
}

fn main() {
    // `cargo bench` passes `--bench`; ignore harness arguments.
    let quick = std::env::var("QKC_BENCH_QUICK").is_ok();
    let threads = threads();
    // Pinned one worker per CPU, as qkc's runtimes pin theirs: unpinned, both workers
    // sometimes share one CPU and the read bandwidth reads ~30% low.
    let pool = match qkc::runtime::worker_pool(threads, "bench") {
        Ok(p) => p,
        Err(e) => return eprintln!("cannot build thread pool: {e}"),
    };
    let prog = match qkc::dsl::compile("gemv_w3p5.qk", KERNEL) {
        Ok(p) => p,
        Err(e) => return eprintln!("{}", e.render()),
    };
    let k = &prog.kernels[0];
    // GEMM rows beyond the kernel's `where M <= 8` need an unbounded variant.
    let gemm_src = KERNEL.replace("where M <= 8;", "");
    let gemm = match qkc::dsl::compile("gemm_w3p5.qk", &gemm_src) {
        Ok(p) => p,
        Err(e) => return eprintln!("{}", e.render()),
    };
    let kg = &gemm.kernels[0];
    let picked: Option<Vec<(usize, usize, usize)>> = std::env::var("QKC_BENCH_SHAPES")
        .ok()
        .map(|v| v.split(',').filter_map(parse_shape).collect());
    let shapes: Vec<(usize, usize, usize)> = if let Some(p) = picked {
        p
    } else if quick {
        vec![(1, 4096, 4096)]
    } else {
        vec![
            (1, 4096, 4096),
            (1, 8192, 8192),
            (16, 4096, 4096),
            (16, 8192, 8192),
            (64, 4096, 4096),
            (64, 8192, 8192),
        ]
    };
    let runs = if quick { 5 } else { 15 };
    println!("threads: {threads}");
    let bw = read_bandwidth(&pool);
    println!("measured read bandwidth: {:.1} GB/s", bw / 1e9);
    let mut rows = Vec::new();
    for &s in &shapes {
        let kern = if s.0 <= 8 { k } else { kg };
        bench_qkc(
            kern,
            s,
            if s.0 > 8 { runs / 3 + 1 } else { runs },
            &mut rows,
            threads,
        );
        #[cfg(feature = "candle")]
        bench_candle(s, if s.0 > 8 { runs / 3 + 1 } else { runs }, &mut rows);
        bench_f32(
            s,
            if s.0 > 8 { runs / 3 + 1 } else { runs },
            &mut rows,
            &pool,
        );
    }
    #[cfg(not(feature = "candle"))]
    println!("(candle columns need `--features candle`)");
    println!();
    println!(
        "{:<8} {:<24} {:>11} {:>13} {:>11} {:>9} {:>10}",
        "M,N=K", "entry", "time (ms)", "Gweights/s", "GB/s (W)", "of read", "vs qkc"
    );
    for &s in &shapes {
        let base = rows
            .iter()
            .find(|r| r.shape == s && r.name == "qkc cranelift simd")
            .map(|r| r.secs);
        for r in rows.iter().filter(|r| r.shape == s) {
            let gbs = r.weight_bytes / r.secs / 1e9;
            println!(
                "{:<8} {:<24} {:>11.3} {:>13.2} {:>11.2} {:>8.0}% {:>10}",
                format!("{},{}", s.0, s.1),
                r.name,
                r.secs * 1e3,
                (s.1 * s.2) as f64 / r.secs / 1e9,
                gbs,
                100.0 * gbs * 1e9 / bw,
                base.map(|b| format!("{:.2}x", r.secs / b))
                    .unwrap_or_default()
            );
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/qkc-bench");
    if std::fs::create_dir_all(&dir).is_ok() {
        let path = dir.join("cpu_gemv.svg");
        match plot(&rows, &shapes, &path) {
            Ok(()) => println!("\nplot: {}", path.display()),
            Err(e) => eprintln!("plot failed: {e}"),
        }
    }
}
