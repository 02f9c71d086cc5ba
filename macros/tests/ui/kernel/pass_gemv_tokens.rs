//! A 3.5-bit GEMV written as tokens: typed `run` and `run_dims` on the CPU JIT
//! against the reference interpreter, and the generated constants.

use qkc::dsl::host::HostBuf;
use qkc::half::f16;

qkc::quant_kernel! {
    /// 3.5-bit GEMV: int8 activations, f16 group scales, f32 row scale.
    pub Gemv35 = kernel gemv(x: i8[M, K], xs: f32[M], w: q3p5[N, K], ws: f16[N, K / 128]) -> y: f32[M, N] {
        where M <= 8;
        schedule { tile_n = 4; threads = 128; }
        y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128] * xs[m];
    }
}

fn lcg(seed: &mut u64) -> u32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 33) as u32
}

fn main() {
    assert_eq!(Gemv35::NAME, "gemv");
    assert_eq!(Gemv35::DIMS, ["M", "K", "N"]);
    assert_eq!(Gemv35::DIM_MAX[0], 8);
    assert_eq!(Gemv35::INPUTS, ["x", "xs", "w", "ws"]);
    assert_eq!(Gemv35::OUTPUT, "y");
    assert_eq!(Gemv35::WEIGHT_LAYOUT, qkc::layout::Q3P5_STREAM);
    assert_eq!(Gemv35::GROUP, Some(128));
    assert!(Gemv35::SOURCE.starts_with("kernel gemv(x: i8[M, K], xs: f32[M]"));
    assert!(Gemv35::PTX_SM80.contains(".entry gemv"));
    assert!(Gemv35::PTX_SM90.contains(".target sm_90"));
    assert!(Gemv35::HIP_SOURCE.contains("gemv_launch"));

    let (m, k, n) = (3usize, 300usize, 5usize);
    let mut s = 7u64;
    let x: Vec<i8> = (0..m * k).map(|_| lcg(&mut s) as i8).collect();
    let xs: Vec<f32> = (0..m).map(|i| 0.01 + i as f32 * 0.005).collect();
    let layout = Gemv35::WEIGHT_LAYOUT;
    let codes: Vec<i32> = (0..n * k)
        .map(|i| {
            let f = layout.field_of(i % k);
            f.min() + (lcg(&mut s) % (f.max() - f.min() + 1) as u32) as i32
        })
        .collect();
    let w = layout.pack(&codes, n, k).unwrap();
    let ws: Vec<f16> = (0..n * k.div_ceil(128))
        .map(|i| f16::from_f32(0.02 + 0.001 * i as f32))
        .collect();

    let cpu = Gemv35::cpu().unwrap();
    let y = cpu.run(&x, &xs, &w, &ws).unwrap();
    let y2 = cpu.run_dims([m, k, n], &x, &xs, &w, &ws).unwrap();
    assert_eq!(y, y2);

    let kernel = Gemv35::kernel().unwrap();
    let dims = kernel
        .dims_from_pairs(&[
            ("M".into(), m as u64),
            ("K".into(), k as u64),
            ("N".into(), n as u64),
        ])
        .unwrap();
    let bufs = [
        HostBuf::I8(x.clone()),
        HostBuf::F32(xs.clone()),
        HostBuf::Packed(w.clone()),
        HostBuf::F16(ws.clone()),
    ];
    let want = qkc::dsl::interp::run_f64(&kernel, &dims, &bufs).unwrap();
    for (g, r) in y.iter().zip(&want) {
        assert!(
            (*g as f64 - r).abs() <= 1e-5 * r.abs().max(1.0),
            "{g} vs {r}"
        );
    }

    // M = 9 breaks `where M <= 8`.
    let e = cpu
        .run_dims([9, k, n], &x, &xs, &w, &ws)
        .unwrap_err()
        .to_string();
    assert!(e.contains("exceeds its bound"), "{e}");
}
