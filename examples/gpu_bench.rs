//! GPU GEMV benchmark for the 3.5-bit kernel (or any `.qk` kernel): median time of many
//! launches timed with CUDA events, the weights rotated across several device copies
//! so that L2 (60 MB on an H200) cannot serve them, achieved GB/s of weight bytes
//! (packed codes + weight-indexed scales) and the fraction of the read ceiling.
//!
//! ```text
//! cargo run --release --example gpu_bench -- [--kernel examples/kernels/gemv_w3p5.qk]
//!     [--shapes 8192x8192,8192x28672,28672x8192,14336x4096] [--m 1,4,8]
//!     [--copies 8] [--iters 200] [--peak 4.24] [--no-check] [--dump-ptx DIR]
//!     [--backend qkc,llvm] [--block 128,256] [--unroll 2,4,8] [--chunk auto,32] [--min-blocks 0,12] [--smem-floor 0,40960]
//!     [--masked-tail 1,0] [--rows 0,1,2,4] [--stage 0,1,2,3 (direct, through registers, cp.async into 2, 3, ... buffers; default: cp.async x2 where it applies)] [--spread 1,0] [--prefetch 1,0] [--magic 1,0,2 (2: without folding the bias)]
//!     [--mma 0,1,2 (off, on for M >= 3 (the default), on for every M)] [--mma-chunks 1,2,4] [--mma-stage 0,1,2 (direct, through registers, cp.async; default: the options' loads)] [--mma-split 1,2,4] [--long-rows 1|0] [--mma-spread-add 1|0]
//!     [--peers peers.csv] [--csv out.csv] [--svg out.svg]
//!     (a sweep over lowerings; --min-blocks sets `.minnctapersm`, 0 = none;
//!     --smem-floor declares at least that many bytes of shared memory, capping the
//!     blocks per multiprocessor;
//!     --masked-tail 0 runs the remaining chunks one per lane instead of one masked
//!     iteration; --rows sets the weight rows per warp, 0 = automatic; --long-rows 0 keeps
//!     the runtime from launching its K >= 2N functions, so that a sweep of --mma-stage
//!     measures what it names at every shape; --mma-spread-add sets the i8 tensor-core
//!     decode's add form in both functions)
//! ```
//! Shapes are K×N (K the reduction; default: the issue's 4096², 8192², 8192×28672,
//! 28672×8192 at M = 1, 4, 16). Every shape is first checked against the reference
//! interpreter (first M) unless `--no-check`. `--peers` reads the CSV that
//! `benches/gpu_peers.py --csv` wrote in the same device call (cuBLAS fp16 and tinygemm
//! int4 times) and adds them, with qkc's speed-up, to the table; `--csv` writes every
//! row; `--svg` plots achieved TB/s (each kernel's own weight bytes) of the fastest qkc
//! variant and the peers against the read ceiling. `benches/gpu/run.sh` runs it all.

use half::{bf16, f16};
use qkc::codegen::lower::{GpuOptions, WeightLoads};
use qkc::codegen::ptx::PtxOptions;
use qkc::dsl::host::{HostBuf, Rng};
use qkc::dsl::interp;
use qkc::dsl::ir::{Dims, ElemType, Kernel, Role, Scalar, ScaleIndex};
use qkc::runtime::cuda::{CudaDevice, CudaKernel, CudaOptions, PtxSource};

struct Args {
    kernel: String,
    shapes: Vec<(u64, u64)>,
    ms: Vec<u64>,
    copies: usize,
    iters: usize,
    peak: f64,
    check: bool,
    dump_ptx: Option<String>,
    blocks: Vec<u32>,
    unrolls: Vec<u32>,
    chunks: Vec<u32>,
    min_blocks: Vec<u32>,
    smem_floor: Vec<u32>,
    masked: Vec<u32>,
    rows: Vec<u32>,
    stage: Vec<u32>,
    spread: Vec<u32>,
    magic: Vec<u32>,
    mma: Vec<u32>,
    mma_chunks: Vec<u32>,
    mma_stage: Vec<u32>,
    mma_split: Vec<u32>,
    prefetch: Vec<u32>,
    long_rows: bool,
    spread_add: Option<bool>,
    csv: Option<String>,
    svg: Option<String>,
    peers: Option<String>,
    sources: Vec<PtxSource>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        kernel: concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kernels/gemv_w3p5.qk").to_string(),
        shapes: vec![(4096, 4096), (8192, 8192), (8192, 28672), (28672, 8192)],
        ms: vec![1, 4, 16],
        copies: 8,
        iters: 200,
        peak: 4.24,
        check: true,
        dump_ptx: None,
        blocks: vec![128],
        unrolls: vec![4],
        chunks: vec![0],
        min_blocks: vec![0],
        smem_floor: vec![0],
        masked: vec![1],
        rows: vec![0],
        stage: vec![u32::MAX],
        spread: vec![1],
        magic: vec![1],
        mma: vec![u32::MAX],
        mma_chunks: vec![0],
        mma_stage: vec![u32::MAX],
        mma_split: vec![0],
        prefetch: vec![1],
        long_rows: true,
        spread_add: None,
        csv: None,
        svg: None,
        peers: None,
        sources: vec![PtxSource::Qkc],
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
                        let (k, n) = s
                            .split_once('x')
                            .ok_or(format!("bad shape {s}: write KxN"))?;
                        Ok((
                            k.parse().map_err(|_| format!("bad K in {s}"))?,
                            n.parse().map_err(|_| format!("bad N in {s}"))?,
                        ))
                    })
                    .collect::<Result<_, String>>()?
            }
            "--m" => {
                a.ms = val()?
                    .split(',')
                    .map(|s| s.parse().map_err(|_| format!("bad M {s}")))
                    .collect::<Result<_, _>>()?
            }
            "--copies" => a.copies = val()?.parse().map_err(|_| "bad --copies")?,
            "--iters" => a.iters = val()?.parse().map_err(|_| "bad --iters")?,
            "--peak" => a.peak = val()?.parse().map_err(|_| "bad --peak")?,
            "--no-check" => a.check = false,
            "--dump-ptx" => a.dump_ptx = Some(val()?),
            "--block" => a.blocks = list(&val()?)?,
            "--unroll" => a.unrolls = list(&val()?)?,
            "--chunk" => a.chunks = list(&val()?)?,
            "--min-blocks" => a.min_blocks = list(&val()?)?,
            "--smem-floor" => a.smem_floor = list(&val()?)?,
            "--masked-tail" => a.masked = list(&val()?)?,
            "--rows" => a.rows = list(&val()?)?,
            "--stage" => a.stage = list(&val()?)?,
            "--spread" => a.spread = list(&val()?)?,
            "--magic" => a.magic = list(&val()?)?,
            "--mma" => a.mma = list(&val()?)?,
            "--mma-chunks" => a.mma_chunks = list(&val()?)?,
            "--mma-stage" => a.mma_stage = list(&val()?)?,
            "--mma-split" => a.mma_split = list(&val()?)?,
            "--prefetch" => a.prefetch = list(&val()?)?,
            "--long-rows" => a.long_rows = val()? != "0",
            "--mma-spread-add" => a.spread_add = Some(val()? != "0"),
            "--csv" => a.csv = Some(val()?),
            "--svg" => a.svg = Some(val()?),
            "--peers" => a.peers = Some(val()?),
            "--backend" => {
                a.sources = val()?
                    .split(',')
                    .map(|b| match b {
                        "qkc" => Ok(PtxSource::Qkc),
                        #[cfg(feature = "llvm")]
                        "llvm" => Ok(PtxSource::Llvm),
                        other => Err(format!(
                            "unknown backend {other}: qkc, or llvm (with --features llvm)"
                        )),
                    })
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn list(s: &str) -> Result<Vec<u32>, String> {
    s.split(',')
        .map(|x| {
            if x == "auto" {
                Ok(0)
            } else {
                x.parse().map_err(|_| format!("bad number {x}"))
            }
        })
        .collect()
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
                ElemType::Scalar(Scalar::I8) => {
                    HostBuf::I8((0..len).map(|_| rng.next_u64() as i8).collect())
                }
                ElemType::Scalar(Scalar::I32) => {
                    HostBuf::I32((0..len).map(|_| rng.range_i32(-1000, 1000)).collect())
                }
                ElemType::Scalar(Scalar::F16) => HostBuf::F16(
                    (0..len)
                        .map(|_| f16::from_f32(rng.range_f32(lo, hi)))
                        .collect(),
                ),
                ElemType::Scalar(Scalar::BF16) => HostBuf::BF16(
                    (0..len)
                        .map(|_| bf16::from_f32(rng.range_f32(lo, hi)))
                        .collect(),
                ),
                ElemType::Scalar(Scalar::F32) => {
                    HostBuf::F32((0..len).map(|_| rng.range_f32(lo, hi)).collect())
                }
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

/// One lowering variant of the sweep.
struct Variant {
    label: String,
    kernel: CudaKernel,
}

/// `--stage` / `--mma-stage` codes: 0 direct, 1 through registers, 2+ cp.async.
fn loads_of(code: u32) -> WeightLoads {
    match code {
        0 => WeightLoads::Direct,
        1 => WeightLoads::Shared,
        _ => WeightLoads::Async,
    }
}

fn real_main() -> Result<(), String> {
    let mut a = parse()?;
    if !std::path::Path::new(&a.kernel).exists() {
        a.kernel = "examples/kernels/gemv_w3p5.qk".into();
    }
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
    let mut base = GpuOptions::for_kernel(&k);
    if let Some(on) = a.spread_add {
        base.mma_spread_add = on;
        if let Some(l) = base.mma_long_rows.as_mut() {
            l.spread_add = on;
        }
    }
    let mut variants = Vec::new();
    for (&block, &rows) in a
        .blocks
        .iter()
        .flat_map(|b| a.rows.iter().map(move |r| (b, r)))
    {
        for (&unroll, &stage) in a
            .unrolls
            .iter()
            .flat_map(|u| a.stage.iter().map(move |s| (u, s)))
        {
            let spreads = &a.spread;
            let prefetches = &a.prefetch;
            for (&chunk, &masked, &spread, &prefetch) in a.chunks.iter().flat_map(|c| {
                a.masked.iter().flat_map(move |m| {
                    spreads
                        .iter()
                        .flat_map(move |s| prefetches.iter().map(move |pf| (c, m, s, pf)))
                })
            }) {
                let mut decodes: Vec<(u32, u32, u32, u32, u32)> = Vec::new();
                for &g in &a.magic {
                    for &t in &a.mma {
                        for &c in &a.mma_chunks {
                            for &st in &a.mma_stage {
                                for &sp in &a.mma_split {
                                    decodes.push((g, t, c, st, sp));
                                }
                            }
                        }
                    }
                }
                let decodes = &decodes;
                let occupancy: Vec<(u32, u32)> = a
                    .min_blocks
                    .iter()
                    .flat_map(|&mb| a.smem_floor.iter().map(move |&fl| (mb, fl)))
                    .collect();
                for (&(mb, floor), &source, &(magic, mma, mma_chunks, mma_stage, mma_split)) in
                    occupancy.iter().flat_map(|mb| {
                        a.sources
                            .iter()
                            .flat_map(move |s| decodes.iter().map(move |g| (mb, s, g)))
                    })
                {
                    let o = GpuOptions {
                        block,
                        unroll,
                        chunk_weights: (chunk > 0).then_some(chunk),
                        masked_tail: masked != 0,
                        rows_per_warp: (rows > 0).then_some(rows),
                        weight_loads: if stage == u32::MAX {
                            base.weight_loads
                        } else {
                            loads_of(stage)
                        },
                        copy_stages: if stage == u32::MAX {
                            base.copy_stages
                        } else {
                            stage.max(2)
                        },
                        spread: spread != 0,
                        prefetch: prefetch != 0,
                        float_magic: magic != 0,
                        float_fold: magic != 2 && base.float_fold,
                        mma_long_rows: base.mma_long_rows.filter(|_| a.long_rows),
                        mma: if mma == u32::MAX { base.mma } else { mma != 0 },
                        mma_int: if mma == u32::MAX {
                            base.mma_int
                        } else {
                            mma != 0
                        },
                        mma_min_m: if mma == 2 { 1 } else { base.mma_min_m },
                        mma_loads: if mma_stage == u32::MAX {
                            base.mma_loads
                        } else {
                            loads_of(mma_stage)
                        },
                        mma_split: if mma_split == 0 {
                            base.mma_split
                        } else {
                            mma_split
                        },
                        mma_chunks: if mma_chunks == 0 {
                            base.mma_chunks
                        } else {
                            mma_chunks
                        },
                        ..base.clone()
                    };
                    let opts = CudaOptions {
                        gpu: Some(o),
                        ptx: PtxOptions {
                            min_blocks_per_sm: (mb > 0).then_some(mb),
                            shared_floor: floor,
                        },
                        source,
                        ..CudaOptions::default()
                    };
                    let kernel = CudaKernel::new(&dev, &k, &opts).map_err(|e| e.to_string())?;
                    let chunk_s = if chunk == 0 {
                        "auto".to_string()
                    } else {
                        chunk.to_string()
                    };
                    // Every knob away from its default, in the label.
                    let tags: Vec<String> = [
                        (mb != 0).then(|| format!("min blocks {mb}")),
                        (floor != 0).then(|| format!("smem floor {floor}")),
                        (masked == 0).then(|| "unmasked tail".to_string()),
                        (rows != 0).then(|| format!("rows/warp {rows}")),
                        (stage == 0).then(|| "direct loads".to_string()),
                        (stage == 1).then(|| "staged".to_string()),
                        (stage > 1 && stage != u32::MAX).then(|| format!("cp.async x{stage}")),
                        (spread == 0).then(|| "no spread".to_string()),
                        (prefetch == 0).then(|| "no prefetch".to_string()),
                        (magic == 0).then(|| "no magic".to_string()),
                        (magic == 2).then(|| "no fold".to_string()),
                        match (mma, mma_chunks) {
                            (u32::MAX, _) => None,
                            (0, _) => Some("no mma".to_string()),
                            (2, 0) => Some("mma all M".to_string()),
                            (2, c) => Some(format!("mma all M, chunks {c}")),
                            (_, 0) => Some("mma".to_string()),
                            (_, c) => Some(format!("mma chunks {c}")),
                        },
                        (mma != 0 && mma_stage != u32::MAX).then(|| {
                            format!(
                                "mma {}",
                                ["direct", "staged", "cp.async"][mma_stage.min(2) as usize]
                            )
                        }),
                        (mma != 0 && mma_split != 0).then(|| format!("mma split {mma_split}")),
                    ]
                    .into_iter()
                    .flatten()
                    .collect();
                    let mb_s: String = tags.iter().map(|t| format!(", {t}")).collect();
                    variants.push(Variant {
                        label: format!(
                            "{} PTX, block {block}, unroll {unroll}, chunk {chunk_s}{mb_s}",
                            match source {
                                PtxSource::Qkc => "qkc",
                                #[cfg(feature = "llvm")]
                                PtxSource::Llvm => "LLVM",
                            }
                        ),
                        kernel,
                    });
                }
            }
        }
    }
    println!("device: {} ({})", dev.name(), dev.arch().name());
    match dev.copy_bandwidth(1 << 31) {
        Ok(bw) => println!(
            "device-to-device copy: {:.2} TB/s (read + write)",
            bw / 1e12
        ),
        Err(e) => println!("copy ceiling not measured: {e}"),
    }
    println!("kernel {}: weight layout {}", k.name, k.weight_layout());
    if let Some(dir) = &a.dump_ptx {
        std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
        for m in [1, 2, 4, 8, 9] {
            if let Ok(text) = variants[0].kernel.ptx(m) {
                let p = format!("{dir}/{}_m{m}.ptx", k.name);
                std::fs::write(&p, text).map_err(|e| format!("{p}: {e}"))?;
            }
        }
    }
    let peers = match &a.peers {
        Some(p) => read_peers(p)?,
        None => Peers::default(),
    };
    let mut rows: Vec<Row> = Vec::new();
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
            let ck0 = &variants[0].kernel;
            let mut sets = Vec::new();
            for _ in 0..a.copies.max(1) {
                sets.push(ck0.upload(&d, &host).map_err(|e| e.to_string())?);
            }
            let check = a.check && m == a.ms[0];
            let (want, mag) = if check {
                (
                    interp::run_f64(&k, &d, &host).map_err(|e| e.to_string())?,
                    interp::magnitude(&k, &d, &host).map_err(|e| e.to_string())?,
                )
            } else {
                (Vec::new(), Vec::new())
            };
            for v in &variants {
                let ck = &v.kernel;
                if check {
                    ck.launch(&mut sets[0]).map_err(|e| e.to_string())?;
                    let got = ck.download(&sets[0]).map_err(|e| e.to_string())?.to_f64();
                    let tol = (kk as f64 + 64.0) * 2f64.powi(-24);
                    let worst = got
                        .iter()
                        .zip(&want)
                        .zip(&mag)
                        .map(|((g, w), m)| {
                            if g.is_finite() {
                                (g - w).abs() / m.max(1e-30)
                            } else {
                                f64::INFINITY
                            }
                        })
                        .fold(0.0, f64::max);
                    if worst > tol {
                        return Err(format!(
                            "{kk}x{n} M={m} [{}]: wrong output (worst error / magnitude {worst:.3e} > {tol:.3e})",
                            v.label
                        ));
                    }
                }
                let mut t = ck.time(&mut sets, 20, a.iters).map_err(|e| e.to_string())?;
                let med = median(&mut t);
                let min = t[0];
                let wb = k.weight_bytes(&d) as f64;
                let gbs = wb / (med * 1e-6) / 1e9;
                rows.push(Row {
                    k: kk,
                    n,
                    m,
                    label: v.label.clone(),
                    med,
                    min,
                    floor: wb / (a.peak * 1e12) * 1e6,
                    gbs,
                });
            }
            if check {
                println!(
                    "checked {kk}x{n} M={m} against the reference ({} variants)",
                    variants.len()
                );
            }
        }
    }
    println!(
        "\n| K×N | M | variant | median µs | min µs | floor µs | weight GB/s | of {} TB/s | tinygemm int4 µs (qkc speed-up) | cuBLAS fp16 µs (qkc speed-up) |",
        a.peak
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let peer = |r: &Row, which: usize| -> String {
        match peers.get(r.k, r.n, r.m, which) {
            Some(t) => format!("{t:.1} ({:.2}×)", t / r.med),
            None => "n/a".into(),
        }
    };
    for r in &rows {
        println!(
            "| {}x{} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} | {} | {} |",
            r.k,
            r.n,
            r.m,
            r.label,
            r.med,
            r.min,
            r.floor,
            r.gbs,
            r.gbs / (a.peak * 1e3),
            peer(r, 1),
            peer(r, 0)
        );
    }
    if let Some(path) = &a.csv {
        let mut out = String::from(
            "K,N,M,variant,median_us,min_us,floor_us,weight_GBps,fraction_of_ceiling,tinygemm_us,cublas_us\n",
        );
        for r in &rows {
            let opt = |w: usize| {
                peers
                    .get(r.k, r.n, r.m, w)
                    .map_or(String::new(), |t| format!("{t:.2}"))
            };
            out.push_str(&format!(
                "{},{},{},\"{}\",{:.2},{:.2},{:.2},{:.1},{:.4},{},{}\n",
                r.k,
                r.n,
                r.m,
                r.label,
                r.med,
                r.min,
                r.floor,
                r.gbs,
                r.gbs / (a.peak * 1e3),
                opt(1),
                opt(0)
            ));
        }
        std::fs::write(path, out).map_err(|e| format!("{path}: {e}"))?;
        println!("wrote {path}");
    }
    if let Some(path) = &a.svg {
        plot(&rows, &peers, &k, a.peak, std::path::Path::new(path))
            .map_err(|e| format!("{path}: {e}"))?;
        println!("wrote {path}");
    }
    Ok(())
}

/// One timed (shape, M, variant).
struct Row {
    k: u64,
    n: u64,
    m: u64,
    label: String,
    med: f64,
    min: f64,
    floor: f64,
    gbs: f64,
}

/// A benchmark point: (K, N, M).
type Point = (u64, u64, u64);

/// A plotted series: TB/s at a point, if measured.
type Series<'a> = (&'a str, Box<dyn Fn(&Point) -> Option<f64> + 'a>);

/// Peer times from `benches/gpu_peers.py --csv`: `(K, N, M) -> [cuBLAS, tinygemm]` µs.
#[derive(Default)]
struct Peers {
    times: Vec<(Point, [Option<f64>; 2])>,
    read_tbps: Option<f64>,
}

impl Peers {
    fn get(&self, k: u64, n: u64, m: u64, which: usize) -> Option<f64> {
        self.times
            .iter()
            .find(|(key, _)| *key == (k, n, m))
            .and_then(|(_, t)| t[which])
    }
}

fn read_peers(path: &str) -> Result<Peers, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut p = Peers::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("# read_tbps=") {
            p.read_tbps = v.trim().parse().ok();
            continue;
        }
        if line.starts_with('#') || line.starts_with('K') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 5 {
            return Err(format!(
                "{path}: bad peers line {line:?} (want K,N,M,cublas_us,tinygemm_us)"
            ));
        }
        let num = |s: &str| -> Result<u64, String> {
            s.trim()
                .parse()
                .map_err(|_| format!("{path}: bad number {s:?}"))
        };
        let t = |s: &str| s.trim().parse::<f64>().ok();
        p.times
            .push(((num(f[0])?, num(f[1])?, num(f[2])?), [t(f[3]), t(f[4])]));
    }
    Ok(p)
}

/// Achieved TB/s of each kernel's own weight bytes (qkc: packed codes + scales, the
/// fastest variant; tinygemm: 4-bit codes + bf16 scale and zero per 128; cuBLAS: fp16)
/// per (shape, M), with the read ceiling as a line.
fn plot(
    rows: &[Row],
    peers: &Peers,
    k: &Kernel,
    peak: f64,
    path: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let mut points: Vec<(u64, u64, u64)> = Vec::new();
    for r in rows {
        if !points.contains(&(r.k, r.n, r.m)) {
            points.push((r.k, r.n, r.m));
        }
    }
    let ceiling = peers.read_tbps.unwrap_or(peak);
    let best = |p: &(u64, u64, u64)| -> Option<f64> {
        rows.iter()
            .filter(|r| (r.k, r.n, r.m) == *p)
            .map(|r| r.gbs / 1e3)
            .reduce(f64::max)
    };
    let peer_tbps = |p: &(u64, u64, u64), which: usize| -> Option<f64> {
        let t = peers.get(p.0, p.1, p.2, which)?;
        let (kk, n) = (p.0 as f64, p.1 as f64);
        let bytes = if which == 0 {
            2.0 * kk * n
        } else {
            kk * n / 2.0 + (kk / 128.0) * n * 4.0
        };
        Some(bytes / (t * 1e-6) / 1e12)
    };
    let root = SVGBackend::new(path, (1200, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let np = points.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{} on the GPU: achieved TB/s of weight bytes (read ceiling {ceiling:.2} TB/s)",
                k.name
            ),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..np as f64, 0f64..(ceiling * 1.15))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(np)
        .x_label_formatter(&|x| {
            points
                .get(x.floor() as usize)
                .map(|p| format!("{}x{} M={}", p.0, p.1, p.2))
                .unwrap_or_default()
        })
        .y_desc("TB/s")
        .draw()?;
    let series: [Series; 3] = [
        ("qkc (fastest variant)", Box::new(best)),
        ("tinygemm int4 g128", Box::new(|p| peer_tbps(p, 1))),
        ("cuBLAS fp16", Box::new(|p| peer_tbps(p, 0))),
    ];
    let w = 0.8 / series.len() as f64;
    for (si, (name, f)) in series.iter().enumerate() {
        let color = Palette99::pick(si).to_rgba();
        let bars: Vec<Rectangle<(f64, f64)>> = points
            .iter()
            .enumerate()
            .filter_map(|(pi, p)| {
                let v = f(p)?;
                let x0 = pi as f64 + 0.1 + si as f64 * w;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + w * 0.9, v)],
                    color.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, ceiling), (np as f64, ceiling)],
            BLACK.stroke_width(2),
        ))?
        .label("read ceiling")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}
