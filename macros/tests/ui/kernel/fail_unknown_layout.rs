// `q5` is neither declared nor built in.
qkc::quant_kernel! {
    pub Gemv = kernel gemv(x: i8[M, K], w: q5[N, K]) -> y: f32[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k];
    }
}

fn main() {}
