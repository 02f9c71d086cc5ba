//! Every generated PTX module assembles with NVIDIA's `ptxas` for `sm_80` and `sm_90`:
//! all built-in layouts × activation types × with/without group scales (M bounded by 8
//! and unbounded), plus the example kernels. Prints a report of registers and spills
//! (`ptxas -v`).
//!
//! `ptxas` is found through `QKC_PTXAS`, then `PATH`, then the `nvidia-cuda-nvcc-cu12`
//! Python wheel (`pip install nvidia-cuda-nvcc-cu12`). Without it the test prints
//! `SKIP: ...`, except under CI (`CI` set), where a missing `ptxas` fails.

mod gpu_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use gpu_common::*;
use qkc::codegen::lower::{lower_gpu, GpuOptions};
use qkc::codegen::ptx::{self, Arch};
use qkc_dsl::ir::Kernel;

fn works(p: &Path) -> bool {
    Command::new(p)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Locates `ptxas`, or says why it could not.
fn find_ptxas() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("QKC_PTXAS") {
        let p = PathBuf::from(p);
        return if works(&p) {
            Ok(p)
        } else {
            Err(format!("QKC_PTXAS={} does not run", p.display()))
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let p = d.join("ptxas");
            if p.is_file() && works(&p) {
                return Ok(p);
            }
        }
    }
    let py = "import nvidia.cuda_nvcc as m, os; print(list(m.__path__)[0] if m.__file__ is None else os.path.dirname(m.__file__))";
    for python in ["python3", "python"] {
        if let Ok(o) = Command::new(python).args(["-c", py]).output() {
            if o.status.success() {
                let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
                let p = Path::new(&dir).join("bin").join("ptxas");
                if works(&p) {
                    return Ok(p);
                }
            }
        }
    }
    Err(
        "ptxas not found (set QKC_PTXAS, put it on PATH, or `pip install nvidia-cuda-nvcc-cu12`)"
            .into(),
    )
}

struct Report {
    name: String,
    arch: Arch,
    regs: Option<u32>,
    spill_stores: Option<u32>,
    spill_loads: Option<u32>,
    stack: Option<u32>,
}

/// The number before `what` in a `ptxas -v` line.
fn number_before(text: &str, what: &str) -> Option<u32> {
    let i = text.find(what)?;
    text[..i].split_whitespace().last()?.parse().ok()
}

fn assemble(
    ptxas: &Path,
    dir: &Path,
    name: &str,
    text: &str,
    arch: Arch,
) -> Result<Report, String> {
    let src = dir.join(format!("{name}.{}.ptx", arch.name()));
    std::fs::write(&src, text).map_err(|e| e.to_string())?;
    let out = dir.join(format!("{name}.{}.cubin", arch.name()));
    let o = Command::new(ptxas)
        .arg(format!("-arch={}", arch.name()))
        .arg("-v")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .output()
        .map_err(|e| format!("running ptxas: {e}"))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if !o.status.success() || log.contains("error") {
        return Err(format!(
            "{name} ({}): ptxas failed:\n{log}\n(source kept at {})",
            arch.name(),
            src.display()
        ));
    }
    Ok(Report {
        name: name.to_string(),
        arch,
        regs: number_before(&log, "registers"),
        spill_stores: number_before(&log, "bytes spill stores"),
        spill_loads: number_before(&log, "bytes spill loads"),
        stack: number_before(&log, "bytes stack frame"),
    })
}

fn all_kernels() -> Vec<Kernel> {
    let mut ks: Vec<Kernel> = example_kernels(env!("CARGO_MANIFEST_DIR"))
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    // Unbounded M: each module holds the GEMV tiles and the generic (M > 8) path, a
    // superset of the `M <= 8` kernels' code.
    ks.extend(
        generated_kernels()
            .into_iter()
            .filter(|k| k.dims[k.m].max > 8),
    );
    ks
}

#[test]
fn every_kernel_assembles_with_ptxas() {
    let ptxas = match find_ptxas() {
        Ok(p) => p,
        Err(why) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI must have ptxas: {why}");
            }
            println!("SKIP: {why}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("qkc-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let jobs: Vec<(String, String, Arch)> = all_kernels()
        .iter()
        .flat_map(|k| {
            // Every M tile in one function, the runtime's M = 1 and M = 4 buckets
            // (two weight rows per warp), the M = 1 bucket with the weights staged
            // through registers and loaded directly (the default copies them by cp.async),
            // and the tensor-core path.
            let bucket = |m: u64| GpuOptions {
                m_tiles: vec![m as u32],
                max_m: Some(m),
                ..GpuOptions::for_kernel(k)
            };
            let staged = GpuOptions {
                weight_loads: qkc::codegen::lower::WeightLoads::Shared,
                ..bucket(1)
            };
            let direct = GpuOptions {
                weight_loads: qkc::codegen::lower::WeightLoads::Direct,
                ..bucket(1)
            };
            let mut variants = vec![
                ("", GpuOptions::for_kernel(k)),
                ("_m1", bucket(1)),
                ("_m4", bucket(4)),
                ("_m1_staged", staged),
                ("_m1_direct", direct),
            ];
            // The tensor-core GEMV (mma.sync; M >= 3 by default) where it applies: the
            // 8-row bucket, and the M = 1 bucket with the path forced on, loading
            // directly and with cp.async copies into shared memory.
            if qkc::codegen::lower::mma::MmaPlan::new(&qkc::codegen::lower::Plan::new(k)).is_some()
            {
                variants.push(("_m8_mma", bucket(8)));
                variants.push((
                    "_m1_mma",
                    GpuOptions {
                        mma_min_m: 1,
                        ..bucket(1)
                    },
                ));
                // The runtime's functions for long rows (K >= 2N) in the 2- and 4-row
                // buckets (ptxas 12.9 once crashed on the 4-row one).
                if let Some(long) = GpuOptions::for_kernel(k).mma_long_rows {
                    for (tag, m) in [("_m2_long", 2), ("_m4_long", 4)] {
                        variants.push((tag, long.apply(&bucket(m))));
                    }
                }
                variants.push((
                    "_m1_mma_async",
                    GpuOptions {
                        mma_min_m: 1,
                        mma_loads: qkc::codegen::lower::WeightLoads::Async,
                        ..bucket(1)
                    },
                ));
            }
            variants
                .into_iter()
                .flat_map(|(tag, o)| {
                    let f = lower_gpu(k, &o);
                    [Arch::Sm80, Arch::Sm90].map(|a| {
                        let text = ptx::emit(&f, a).unwrap_or_else(|e| panic!("{}: {e}", k.name));
                        (format!("{}{tag}", k.name), text, a)
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let chunks: Vec<Vec<(String, String, Arch)>> = (0..threads)
        .map(|t| jobs.iter().skip(t).step_by(threads).cloned().collect())
        .collect();
    let results: Vec<Result<Report, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = chunks
            .iter()
            .map(|c| {
                let (ptxas, dir) = (&ptxas, &dir);
                s.spawn(move || {
                    c.iter()
                        .map(|(n, t, a)| assemble(ptxas, dir, n, t, *a))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("ptxas thread"))
            .collect()
    });
    let mut fails = Vec::new();
    let mut reports = Vec::new();
    for r in results {
        match r {
            Ok(r) => reports.push(r),
            Err(e) => fails.push(e),
        }
    }
    reports.sort_by(|a, b| (&a.name, a.arch.name()).cmp(&(&b.name, b.arch.name())));
    println!("ptxas {}: {} modules", ptxas.display(), reports.len());
    println!(
        "{:<32} {:<6} {:>5} {:>12} {:>11} {:>6}",
        "kernel", "arch", "regs", "spill stores", "spill loads", "stack"
    );
    for r in &reports {
        let s = |v: Option<u32>| v.map_or("?".to_string(), |v| v.to_string());
        println!(
            "{:<32} {:<6} {:>5} {:>12} {:>11} {:>6}",
            r.name,
            r.arch.name(),
            s(r.regs),
            s(r.spill_stores),
            s(r.spill_loads),
            s(r.stack)
        );
    }
    assert!(
        fails.is_empty(),
        "{} modules failed:\n{}",
        fails.len(),
        fails.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
