//! Criterion benchmark of compile time: `.qk` text to checked IR, to loop IR, and to
//! native code with the Cranelift JIT (and LLVM's, with `--features llvm`). qkc's promise is milliseconds, not the hours
//! of autotuning some peers need before the first token.

use criterion::{criterion_group, criterion_main, Criterion};
use qkc::codegen::lower::{lower_cpu, CpuOptions as LowerOptions};
use qkc::runtime::cpu::{CpuKernel, CpuOptions};

const KERNEL: &str = include_str!("../examples/kernels/gemv_w3p5.qk");

fn compile_time(c: &mut Criterion) {
    c.bench_function("front end (parse + check + proofs)", |b| {
        b.iter(|| qkc::dsl::compile("gemv_w3p5.qk", std::hint::black_box(KERNEL)).is_ok())
    });
    let prog = match qkc::dsl::compile("gemv_w3p5.qk", KERNEL) {
        Ok(p) => p,
        Err(e) => return eprintln!("{}", e.render()),
    };
    let k = &prog.kernels[0];
    c.bench_function("lower to loop IR (cpu)", |b| {
        b.iter(|| lower_cpu(std::hint::black_box(k), &LowerOptions::for_kernel(k)))
    });
    c.bench_function("cranelift JIT compile", |b| {
        b.iter(|| CpuKernel::new(std::hint::black_box(k), &CpuOptions::for_kernel(k)).is_ok())
    });
    #[cfg(feature = "llvm")]
    {
        use qkc::runtime::llvm_cpu::{LlvmCpuKernel, LlvmCpuOptions};
        // O3, two variants (the kernel's tile and tile_m = 1), as the runtime builds it.
        c.bench_function("llvm JIT compile (O3)", |b| {
            b.iter(|| {
                LlvmCpuKernel::new(std::hint::black_box(k), &LlvmCpuOptions::for_kernel(k)).is_ok()
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = compile_time
}
criterion_main!(benches);
