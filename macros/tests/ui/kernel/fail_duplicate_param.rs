// A parameter declared twice: the note gives the first declaration's position.
qkc::quant_kernel! {
    pub Gemv = kernel gemv(x: i8[M, K], w: s4[N, K], x: f32[M]) -> y: f32[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k];
    }
}

fn main() {}
