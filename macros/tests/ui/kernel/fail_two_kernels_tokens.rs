// Written as tokens, an item ends with its kernel's body: a second kernel needs
// its own `Name =`.
qkc::quant_kernel! {
    pub A = kernel a(x: i8[M, K], w: s4[N, K]) -> y: f32[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k];
    }
    kernel b(x: i8[M, K], w: s4[N, K]) -> y: f32[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k];
    }
}

fn main() {}
