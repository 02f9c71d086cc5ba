// A `#[qkc::packed]` type can't be used as a `.qk` type directly: the help says how.
#[qkc::packed(storage = stream)]
pub struct Q3p5 {
    #[bits(4)]
    hi: i8,
    #[bits(3)]
    lo: i8,
}

qkc::quant_kernel! {
    pub Gemv = kernel gemv(x: i8[M, K], w: Q3p5[N, K]) -> y: f32[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k];
    }
}

fn main() {}
