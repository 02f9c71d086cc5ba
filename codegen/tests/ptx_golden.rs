//! Golden snapshots (insta) of the PTX backend's output for the example kernels: the
//! module that runs for M = 1 (the decode GEMV the runtime launches for one activation
//! row), for `sm_90`. Plus structural checks on every example and every built-in
//! layout: the `sm_80` module differs only in `.target`; the instructions the schedule
//! relies on are there (`ld.global.nc.v4.u32` or aligned word loads, `dp4a` for i8
//! activations, `shfl.sync.bfly`, `cvt.rn.f16.f32`/`cvt.rn.bf16.f32` stores); the notes
//! are carried as comments; a CPU function is refused.

#[path = "../../tests/gpu_common/mod.rs"]
mod gpu_common;

use gpu_common::*;
use qkc_codegen::lower::{lower_cpu, lower_gpu, CpuOptions, GpuOptions};
use qkc_codegen::ptx::{self, Arch, PtxError};
use qkc_dsl::ir::{Kernel, Scalar};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The options of the runtime's M = 1 bucket.
fn m1(k: &Kernel) -> GpuOptions {
    GpuOptions {
        m_tiles: vec![1],
        max_m: Some(1),
        ..GpuOptions::for_kernel(k)
    }
}

#[test]
fn golden_m1_sm90() {
    let ks = example_kernels(ROOT);
    assert_eq!(
        ks.len(),
        5,
        "the example kernels changed: update the snapshots"
    );
    for (file, k) in ks {
        let text = ptx::emit(&lower_gpu(&k, &m1(&k)), Arch::Sm90).expect("emit");
        insta::assert_snapshot!(format!("ptx_m1_sm90_{file}"), text);
    }
}

fn check_structure(k: &Kernel, o: &GpuOptions) {
    let f = lower_gpu(k, o);
    let t90 = ptx::emit(&f, Arch::Sm90).expect("emit sm_90");
    let t80 = ptx::emit(&f, Arch::Sm80).expect("emit sm_80");
    assert!(t90.contains(".version 7.8\n.target sm_90\n.address_size 64\n"));
    assert_eq!(
        t80,
        t90.replace(".target sm_90", ".target sm_80"),
        "{}",
        k.name
    );
    assert!(t90.is_ascii(), "{}: ptxas rejects non-ASCII text", k.name);
    assert!(t90.contains(&format!(".visible .entry {}(", k.name)));
    for n in &f.notes {
        let prefix: String = n.chars().take_while(|c| c.is_ascii()).collect();
        assert!(t90.contains(&format!("// {prefix}")), "note missing: {n}");
    }
    assert!(
        t90.contains("shfl.sync.bfly.b32"),
        "{}: no warp reduction",
        k.name
    );
    let words = t90.contains("ld.global.nc.v4.u32")
        || t90.contains("ld.global.nc.u32")
        || t90.contains("ld.global.nc.u64");
    assert!(words, "{}: no whole-word weight loads", k.name);
    if k.is_int() {
        assert!(t90.contains("dp4a.s32.s32"), "{}: no dp4a", k.name);
        assert!(
            t90.contains("ld.global.nc.v4.u32"),
            "{}: activations not loaded as vectors",
            k.name
        );
    }
    match k.out_ty() {
        Scalar::F16 => assert!(t90.contains("cvt.rn.f16.f32")),
        Scalar::BF16 => assert!(t90.contains("cvt.rn.bf16.f32")),
        _ => {}
    }
    // Every `.reg` used is declared once; every branch target exists.
    for line in t90.lines().filter(|l| l.contains("bra ")) {
        let label = line
            .trim()
            .trim_end_matches(';')
            .rsplit(' ')
            .next()
            .unwrap_or("");
        assert!(
            t90.contains(&format!("\n{label}:\n")),
            "{}: undefined label {label}",
            k.name
        );
    }
}

#[test]
fn structure_of_every_kernel() {
    for (_, k) in example_kernels(ROOT) {
        check_structure(&k, &GpuOptions::for_kernel(&k));
        check_structure(&k, &m1(&k));
    }
    for k in generated_kernels() {
        check_structure(&k, &GpuOptions::for_kernel(&k));
    }
}

#[test]
fn cpu_functions_are_refused() {
    let (_, k) = example_kernels(ROOT).remove(0);
    let f = lower_cpu(&k, &CpuOptions::for_kernel(&k));
    assert!(matches!(
        ptx::emit(&f, Arch::Sm90),
        Err(PtxError::NotGpu(_))
    ));
}

#[test]
fn launch_shape_follows_the_dims() {
    let k = example_kernel(ROOT, "gemv_w3p5");
    let f = lower_gpu(&k, &GpuOptions::for_kernel(&k));
    let d = dims(&k, 1, 1000, 4096);
    let dv: Vec<i64> = d.values.iter().map(|&v| v as i64).collect();
    let (grid, block) = ptx::launch_shape(&f, &dv).expect("shape");
    assert_eq!(block, 128);
    assert_eq!(grid, 1000u32.div_ceil(4), "one warp per weight row");
    assert_eq!(Arch::parse("sm_90"), Some(Arch::Sm90));
    assert_eq!(Arch::parse("80"), Some(Arch::Sm80));
    assert_eq!(Arch::parse("sm_75"), None);
}

/// `PtxOptions::shared_floor` raises the declared shared memory (capping the blocks per
/// multiprocessor) and never lowers what the function needs; `.minnctapersm` is
/// emitted only when asked for.
#[test]
fn module_options_set_shared_floor_and_min_blocks() {
    use qkc_codegen::ptx::PtxOptions;
    let k = example_kernel(ROOT, "gemv_w3p5");
    let f = lower_gpu(&k, &m1(&k));
    assert!(f.shared_bytes > 0, "the i8 M = 1 function stages weights");
    let decl = |text: &str| -> usize {
        let line = text
            .lines()
            .find(|l| l.starts_with(".shared"))
            .expect("a shared declaration");
        let n = line.split('[').nth(1).and_then(|s| s.split(']').next());
        n.and_then(|n| n.parse().ok()).expect("a byte count")
    };
    let plain = ptx::emit(&f, Arch::Sm90).expect("emit");
    assert_eq!(decl(&plain), f.shared_bytes);
    assert!(!plain.contains(".minnctapersm"));
    let floor = (f.shared_bytes + 4096) as u32;
    let opts = PtxOptions {
        min_blocks_per_sm: Some(3),
        shared_floor: floor,
    };
    let raised = ptx::emit_with(&f, Arch::Sm90, &opts).expect("emit");
    assert_eq!(decl(&raised), floor as usize);
    assert!(raised.contains(".minnctapersm 3"));
    let low = PtxOptions {
        shared_floor: 16,
        ..PtxOptions::default()
    };
    assert_eq!(
        decl(&ptx::emit_with(&f, Arch::Sm90, &low).expect("emit")),
        f.shared_bytes
    );
    // A function without shared memory gets the declaration only from the floor.
    let g = example_kernel(ROOT, "gemv_f16_w3p5");
    let gf = lower_gpu(&g, &m1(&g));
    assert_eq!(gf.shared_bytes, 0);
    let text = ptx::emit_with(&gf, Arch::Sm90, &opts).expect("emit");
    assert_eq!(decl(&text), floor as usize);
}
