//! The issue's example: the kernel as a raw string literal.

qkc::quant_kernel! {
    /// doc comments pass through
    pub Gemv35 = r#"
        kernel gemv(x: i8[M, K], xs: f32[M], w: q3p5[N, K], ws: f16[N, K / 128]) -> y: f32[M, N] {
            where M <= 8;
            y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128] * xs[m];
        }
    "#;
}

fn main() {
    assert!(Gemv35::SOURCE.contains("where M <= 8;"));
    let (m, k, n) = (1usize, 256usize, 2usize);
    let x = vec![2i8; m * k];
    let xs = vec![0.5f32; m];
    // hi = 1, lo = 1 in every unit: 0b0001_001, streamed.
    let codes = vec![1i32; n * k];
    let w = Gemv35::WEIGHT_LAYOUT.pack(&codes, n, k).unwrap();
    let ws = vec![qkc::half::f16::from_f32(0.25); n * 2];
    let y = Gemv35::cpu().unwrap().run(&x, &xs, &w, &ws).unwrap();
    // 256 terms of 2 * 1, times 0.25 and 0.5.
    assert_eq!(y, vec![64.0; m * n]);
}
