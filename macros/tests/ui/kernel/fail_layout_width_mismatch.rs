// The Rust layout puts 4 bits first, the kernel's layout 3: the const check
// fails on the bound type.
#[qkc::packed(storage = stream)]
pub struct Q3p5 {
    #[bits(4)]
    hi: i8,
    #[bits(3)]
    lo: i8,
}

qkc::quant_kernel! {
    use layout Q3p5 as q3p5x;

    pub Gemv = layout q3p5x = { hi: s3, lo: s4 } stream;
    kernel gemv(x: i8[M, K], w: q3p5x[N, K], ws: f16[N, K / 128]) -> y: f32[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128];
    }
}

fn main() {}
