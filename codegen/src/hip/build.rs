//! Writing HIP sources to disk, for `build.rs` scripts of ROCm builds and for
//! `qkc emit --target hip -o DIR`.
//!
//! ```no_run
//! // build.rs of a crate that links qkc kernels into a ROCm program
//! use qkc_codegen::hip::{build::write_sources, Arch};
//! let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
//! let files = write_sources(include_str!("../../../examples/kernels/gemv_w3p5.qk"), &out, Arch::Gfx90a).unwrap();
//! // files: gemv_w3p5.hip, gemv_w3p5.h, CMakeLists.txt; compile the .hip with hipcc.
//! # let _ = files;
//! ```

use std::path::{Path, PathBuf};

use super::{cmake_snippet, emit_kernel, Arch, HipError, HipModule, HipOptions};

/// A failure while generating or writing sources.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the .qk source does not compile:\n{0}")]
    Source(String),
    #[error("the .qk source declares no kernel")]
    NoKernels,
    #[error(transparent)]
    Hip(#[from] HipError),
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Compiles `qk_src` and writes, for each kernel, `NAME.hip` and `NAME.h` into
/// `out_dir`, plus a `CMakeLists.txt` building them as the static library
/// `qkc_kernels`. Files whose content is unchanged are not rewritten (so build systems
/// do not rebuild). Returns the paths, sources first.
pub fn write_sources(qk_src: &str, out_dir: &Path, arch: Arch) -> Result<Vec<PathBuf>, BuildError> {
    write_sources_with(qk_src, out_dir, &HipOptions::new(arch))
}

/// [`write_sources`] with explicit options (schedule, block size, dot products).
pub fn write_sources_with(
    qk_src: &str,
    out_dir: &Path,
    opts: &HipOptions,
) -> Result<Vec<PathBuf>, BuildError> {
    let prog =
        qkc_dsl::compile("<qk source>", qk_src).map_err(|d| BuildError::Source(d.render()))?;
    if prog.kernels.is_empty() {
        return Err(BuildError::NoKernels);
    }
    let modules = prog
        .kernels
        .iter()
        .map(|k| emit_kernel(k, opts))
        .collect::<Result<Vec<_>, _>>()?;
    write_module_files(out_dir, &modules, "qkc_kernels", opts.arch)
}

/// Writes `modules` (`.hip` and `.h` each) and a `CMakeLists.txt` for library `lib`.
pub fn write_module_files(
    out_dir: &Path,
    modules: &[HipModule],
    lib: &str,
    arch: Arch,
) -> Result<Vec<PathBuf>, BuildError> {
    std::fs::create_dir_all(out_dir).map_err(|source| BuildError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for m in modules {
        files.push(write_if_changed(&out_dir.join(m.source_file()), &m.source)?);
    }
    for m in modules {
        files.push(write_if_changed(&out_dir.join(m.header_file()), &m.header)?);
    }
    let names: Vec<String> = modules.iter().map(|m| m.name.clone()).collect();
    files.push(write_if_changed(
        &out_dir.join("CMakeLists.txt"),
        &cmake_snippet(lib, &names, arch),
    )?);
    Ok(files)
}

/// Writes `text` to `path` unless the file already holds exactly that.
pub fn write_if_changed(path: &Path, text: &str) -> Result<PathBuf, BuildError> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text).map_err(|source| BuildError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "kernel k1(x: i8[M, K], w: s4[N, K]) -> y: i32[M, N] {\n    where K <= 4096;\n    y[m, n] = sum(k) x[m, k] * w[n, k];\n}\n\
                       kernel k2(x: f16[M, K], w: u4[N, K]) -> y: f32[M, N] {\n    y[m, n] = sum(k) x[m, k] * w[n, k];\n}\n";

    #[test]
    fn writes_one_pair_per_kernel_and_cmake() {
        let dir = std::env::temp_dir().join(format!("qkc-hip-build-{}", std::process::id()));
        let files = write_sources(SRC, &dir, Arch::Gfx1030).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["k1.hip", "k2.hip", "k1.h", "k2.h", "CMakeLists.txt"]
        );
        let cm = std::fs::read_to_string(dir.join("CMakeLists.txt")).unwrap();
        assert!(
            cm.contains("add_library(qkc_kernels STATIC k1.hip k2.hip)"),
            "{cm}"
        );
        assert!(cm.contains("HIP_ARCHITECTURES gfx1030"), "{cm}");
        let h = std::fs::read_to_string(dir.join("k1.h")).unwrap();
        assert!(h.contains("hipError_t k1_launch(const signed char* x, const unsigned char* w, int* y, long long M, long long K, long long N, hipStream_t stream);"), "{h}");
        // Unchanged content is not rewritten.
        let t0 = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_sources(SRC, &dir, Arch::Gfx1030).unwrap();
        assert_eq!(
            std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
            t0
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn reports_source_errors() {
        let e = write_sources("kernel (", &std::env::temp_dir(), Arch::Gfx90a).unwrap_err();
        assert!(matches!(e, BuildError::Source(_)), "{e}");
    }
}
