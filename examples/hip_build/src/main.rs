//! Prints where `build.rs` wrote the HIP sources and how to build them, and builds
//! them with CMake when ROCm's `hipcc` is installed.

use std::path::Path;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("QKC_HIP_DIR"));
    let arch = env!("QKC_HIP_ARCH");
    println!("HIP sources for {arch} in {}:", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for n in &names {
        println!("  {n}");
    }
    println!("build them with:");
    println!(
        "  cmake -S {} -B build && cmake --build build   # static library qkc_kernels",
        dir.display()
    );
    println!(
        "or:   hipcc --offload-arch={arch} -O3 -c {}/NAME.hip",
        dir.display()
    );
    match Command::new("hipcc").arg("--version").output() {
        Err(e) => println!("hipcc: skipped ({e}: ROCm is not installed)"),
        Ok(_) => {
            for n in names.iter().filter(|n| n.ends_with(".hip")) {
                let status = Command::new("hipcc")
                    .arg(format!("--offload-arch={arch}"))
                    .args(["-O3", "-c"])
                    .arg(dir.join(n))
                    .arg("-o")
                    .arg(dir.join(format!("{n}.o")))
                    .status()?;
                println!("hipcc {n}: {status}");
            }
        }
    }
    Ok(())
}
