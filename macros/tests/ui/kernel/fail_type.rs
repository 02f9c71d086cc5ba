// f32 is not a weight type: the error is on `f32`.
qkc::quant_kernel! {
    pub Gemv = kernel gemv(x: i8[M, K], w: f32[N, K]) -> y: f32[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k];
    }
}

fn main() {}
