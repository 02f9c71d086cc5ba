//! Writes HIP sources for the kernels of `kernels.qk` into `OUT_DIR/hip` with
//! `qkc_codegen::hip::build::write_sources`: one `.hip` and one `.h` per kernel and
//! a `CMakeLists.txt` building them as the static library `qkc_kernels`. The arch
//! is `QKC_HIP_ARCH` (default `gfx90a`). The directory is passed to the crate as
//! `QKC_HIP_DIR`; a ROCm build would then run `hipcc` or CMake on it.

use std::error::Error;
use std::path::PathBuf;

use qkc_codegen::hip::build::write_sources;
use qkc_codegen::hip::Arch;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=kernels.qk");
    println!("cargo:rerun-if-env-changed=QKC_HIP_ARCH");
    let arch: Arch = std::env::var("QKC_HIP_ARCH")
        .unwrap_or_else(|_| "gfx90a".into())
        .parse()?;
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let src = std::fs::read_to_string(manifest.join("kernels.qk"))?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("hip");
    let files = write_sources(&src, &out, arch)?;
    println!(
        "cargo:warning=qkc: wrote {} HIP files for {arch} into {}",
        files.len(),
        out.display()
    );
    println!("cargo:rustc-env=QKC_HIP_DIR={}", out.display());
    println!("cargo:rustc-env=QKC_HIP_ARCH={arch}");
    Ok(())
}
