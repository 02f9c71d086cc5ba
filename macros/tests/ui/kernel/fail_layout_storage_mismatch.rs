// Same fields, but the Rust layout is one unit per byte and the kernel's a stream.
#[qkc::packed(storage = byte)]
pub struct Q3p5 {
    #[bits(4)]
    hi: i8,
    #[bits(3)]
    lo: i8,
}

qkc::quant_kernel! {
    use layout Q3p5 as q3p5;

    pub Gemv = kernel gemv(x: i8[M, K], w: q3p5[N, K], ws: f16[N, K / 128]) -> y: f32[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128];
    }
}

fn main() {}
