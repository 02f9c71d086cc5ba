//! Several kernels in one invocation: an f16 kernel with a typed `f16` result,
//! and an exact i32 kernel whose dims the slices don't determine (M and K only
//! appear as a product in `x`), which has `run_dims` only.

use qkc::half::f16;

qkc::quant_kernel! {
    pub HalfGemv = kernel half_gemv(x: f16[M, K], xs: f32[M], w: u4[N, K], ws: f16[N, K / 32]) -> y: f16[M, N] {
        where M <= 4;
        y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 32] * xs[m];
    }

    /// Cfg'd out: `#[cfg]` applies to every generated item (the kernel is still
    /// checked while expanding).
    #[cfg(any())]
    pub Gone = kernel gone(x: i8[M, K], w: s4[N, K]) -> y: f32[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k];
    }

    /// The user's derive is kept, the macro adds the rest.
    #[derive(Debug)]
    pub(crate) Exact = kernel exact(x: i8[M, K], w: s3[N, K]) -> y: i32[M, N] {
        where K <= 65536;
        y[m, n] = sum(k) x[m, k] * w[n, k];
    }
}

fn main() {
    let (m, k, n) = (2usize, 64usize, 3usize);
    let x = vec![f16::from_f32(0.5); m * k];
    let w = qkc::layout::builtin("u4")
        .unwrap()
        .pack(&vec![3; n * k], n, k)
        .unwrap();
    let ws = vec![f16::from_f32(0.25); n * 2];
    let y: Vec<f16> = HalfGemv::cpu()
        .unwrap()
        .run(&x, &[1.0, 1.0], &w, &ws)
        .unwrap();
    assert_eq!(y, vec![f16::from_f32(0.5 * 3.0 * 0.25 * 64.0); m * n]);

    let x = vec![-2i8; m * k];
    let w = qkc::layout::builtin("s3")
        .unwrap()
        .pack(&vec![-4; n * k], n, k)
        .unwrap();
    let y: Vec<i32> = Exact::cpu().unwrap().run_dims([m, k, n], &x, &w).unwrap();
    assert_eq!(y, vec![8 * 64; m * n]);
    assert!(Exact::DIMS_PLAN.len() < 3);
    assert_eq!(format!("{:?}", Exact), "Exact");
    assert_eq!(Exact, Exact::default());
}
