// An i32 accumulator can't be proved for unbounded K with s4 weights.
qkc::quant_kernel! {
    pub Exact = kernel exact(x: i8[M, K], w: s4[N, K]) -> y: f32[M, N] {
        y[m, n] = sum<i32>(k) x[m, k] * w[n, k];
    }
}

fn main() {}
