//! The CPU lowering, executed by the loop-IR interpreter, equals the reference
//! interpreter on every bundled kernel and odd shapes.

use qkc_codegen::loop_ir::eval;
use qkc_codegen::lower::{lower_cpu, CpuOptions};
use qkc_dsl::host::{random_inputs, HostBuf};
use qkc_dsl::interp;

fn bytes_to_out(like: &HostBuf, b: &[u8]) -> Vec<f64> {
    match like {
        HostBuf::F32(_) => b
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        HostBuf::I32(_) => b
            .chunks(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        HostBuf::F16(_) => b
            .chunks(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        HostBuf::BF16(_) => b
            .chunks(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        _ => panic!("unexpected output type"),
    }
}

#[test]
fn cpu_lowering_matches_reference() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/kernels");
    let shapes: &[(u64, u64, u64)] = &[
        (1, 1, 2),
        (3, 17, 33),
        (2, 5, 130),
        (5, 3, 256),
        (1, 4, 129),
        (2, 3, 1000),
    ];
    let mut packed_kernels = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let src = std::fs::read_to_string(&p).unwrap();
        let prog = qkc_dsl::compile(&p.display().to_string(), &src).unwrap();
        for k in &prog.kernels {
            for (chunked, packed_dot) in [(true, false), (false, false), (true, true)] {
                for tile_m in [1, 3] {
                    let f = lower_cpu(
                        k,
                        &CpuOptions {
                            tile_m,
                            chunked_unpack: chunked,
                            packed_dot,
                        },
                    );
                    if packed_dot && f.to_string().contains("dot_packed") {
                        packed_kernels.insert(k.name.clone());
                    }
                    for (si, &(m, n, kk)) in shapes.iter().enumerate() {
                        if m > k.dims[k.m].max {
                            continue;
                        }
                        let mut dims = qkc_dsl::ir::Dims { values: vec![0; 3] };
                        dims.values[k.m] = m;
                        dims.values[k.n] = n;
                        dims.values[k.k] = kk;
                        let inputs = random_inputs(k, &dims, 100 + si as u64);
                        let want = interp::run(k, &dims, &inputs).unwrap();
                        let mut bufs: Vec<Vec<u8>> = inputs.iter().map(|b| b.as_bytes()).collect();
                        bufs.push(vec![0xAB; want.as_bytes().len()]);
                        let d: Vec<i64> = dims.values.iter().map(|&v| v as i64).collect();
                        eval::run(&f, &mut bufs, &d)
                            .unwrap_or_else(|e| panic!("{}: {e}\n{f}", k.name));
                        let got = bytes_to_out(&want, bufs.last().unwrap());
                        let want_f = want.to_f64();
                        for (i, (g, w)) in got.iter().zip(&want_f).enumerate() {
                            let tol = if k.out_ty() == qkc_dsl::ir::Scalar::I32 {
                                0.0
                            } else {
                                1e-2 * w.abs().max(1e-2)
                            };
                            assert!(
                                (g - w).abs() <= tol,
                                "{} {:?} chunked={chunked} packed={packed_dot} tm={tile_m} [{i}]: {g} vs {w}",
                                k.name,
                                (m, n, kk)
                            );
                        }
                    }
                }
            }
        }
    }
    // Whole 64-unit blocks as one `dot_packed` (the LLVM AVX-512 path's operation),
    // evaluated by its loop-IR semantics: the flagship i8 kernel must use it.
    assert!(
        packed_kernels.contains("gemv_w3p5"),
        "dot_packed used by {packed_kernels:?}"
    );
}
