// A parameter without `:` before its type: the error is on the type.
qkc::quant_kernel! {
    pub Gemv = kernel gemv(x i8[M, K], w: s4[N, K]) -> y: f32[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k];
    }
}

fn main() {}
