// The accumulator type is not closed: the error is on the token after it.
qkc::quant_kernel! {
    pub Gemv = kernel gemv(x: i8[M, K], w: s4[N, K]) -> y: f32[M, N] {
        where K <= 4096;
        y[m, n] = sum<i32(k) x[m, k] * w[n, k];
    }
}

fn main() {}
