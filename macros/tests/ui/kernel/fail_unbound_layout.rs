// A binding to a layout that no kernel declares or uses.
#[qkc::packed(storage = stream)]
pub struct Q3p5 {
    #[bits(4)]
    hi: i8,
    #[bits(3)]
    lo: i8,
}

qkc::quant_kernel! {
    use layout Q3p5 as w35;

    pub Gemv = kernel gemv(x: i8[M, K], w: s4[N, K], ws: f16[N, K / 128]) -> y: f32[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128];
    }
}

fn main() {}
