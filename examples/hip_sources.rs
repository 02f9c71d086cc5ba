//! HIP sources for a ROCm build, from a kernel declared with `qkc::quant_kernel!`:
//! writes `NAME.hip`, `NAME.h` and a `CMakeLists.txt` into a temporary directory
//! with `qkc::codegen::hip::build::write_sources` (what a `build.rs` does, see
//! `examples/hip_build/`), and compiles them with `hipcc` when it is installed.
//!
//! ```text
//! cargo run --release --example hip_sources [-- gfx90a|gfx940|gfx942|gfx1030|gfx1100]
//! ```

use std::error::Error;
use std::process::Command;

use qkc::codegen::hip::build::write_sources;
use qkc::codegen::hip::Arch;

qkc::quant_kernel! {
    /// The 3.5-bit GEMV.
    pub Gemv35 = kernel gemv_w3p5(x: i8[M, K], xs: f32[M], w: q3p5[N, K], ws: f16[N, K / 128]) -> y: f32[M, N] {
        where M <= 8;
        y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128] * xs[m];
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let arch: Arch = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("gfx90a")
        .parse()?;
    let dir = std::env::temp_dir().join(format!("qkc-hip-sources-{}", std::process::id()));
    let files = write_sources(Gemv35::SOURCE, &dir, arch)?;
    println!(
        "HIP sources for {arch} ({}, wave{}):",
        arch.family(),
        arch.wave_size()
    );
    for f in &files {
        let len = std::fs::metadata(f)?.len();
        println!("  {} ({len} bytes)", f.display());
    }
    if arch.name() == Gemv35::HIP_ARCH {
        let hip = std::fs::read_to_string(dir.join("gemv_w3p5.hip"))?;
        println!(
            "identical to Gemv35::HIP_SOURCE (emitted at compile time): {}",
            hip == Gemv35::HIP_SOURCE
        );
    }
    let header = std::fs::read_to_string(dir.join("gemv_w3p5.h"))?;
    println!("launch wrapper:");
    for line in header.lines().filter(|l| l.contains("_launch(")) {
        println!("  {line}");
    }

    let hip = dir.join("gemv_w3p5.hip");
    let obj = dir.join("gemv_w3p5.o");
    match Command::new("hipcc")
        .arg(format!("--offload-arch={}", arch.name()))
        .args(["-O3", "-c"])
        .arg(&hip)
        .arg("-o")
        .arg(&obj)
        .output()
    {
        Err(e) => println!("hipcc: skipped ({e}: ROCm is not installed)"),
        Ok(out) if out.status.success() => println!("hipcc: compiled {}", obj.display()),
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("cannot find ROCm device library") {
                println!("hipcc: skipped (this ROCm install has no device library for {arch})");
            } else {
                return Err(format!("hipcc failed:\n{err}").into());
            }
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
