// A row scale indexed with two indices.
qkc::quant_kernel! {
    pub Gemv = kernel gemv(x: i8[M, K], xs: f32[M], w: s4[N, K]) -> y: f32[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k] * xs[m, k];
    }
}

fn main() {}
