// Kernel text in a string literal: on stable the error covers the literal and the
// message quotes the offending line with a caret.
qkc::quant_kernel! {
    pub Gemv = r#"
        kernel gemv(x: i8[M, K], w: s4[N, K]) -> y: f32[M, N] {
            where K <= 4096;
            y[m, n] = sum(k) x[m, k] * w[n, k]
        }
    "#;
}

fn main() {}
