// `ws` is declared with groups of 64 but indexed with groups of 128.
qkc::quant_kernel! {
    pub Gemv = kernel gemv(x: i8[M, K], w: s4[N, K], ws: f16[N, K / 64]) -> y: f32[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128];
    }
}

fn main() {}
