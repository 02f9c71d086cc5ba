// One item holds one kernel.
qkc::quant_kernel! {
    pub Both = r#"
        kernel a(x: i8[M, K], w: s4[N, K]) -> y: f32[M, N] { y[m, n] = sum(k) x[m, k] * w[n, k]; }
        kernel b(x: i8[M, K], w: s4[N, K]) -> y: f32[M, N] { y[m, n] = sum(k) x[m, k] * w[n, k]; }
    "#;
}

fn main() {}
