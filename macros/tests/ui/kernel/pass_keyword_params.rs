//! `.qk` parameter names that are Rust keywords (or `dims`) still make a valid
//! typed API.

qkc::quant_kernel! {
    pub Odd = kernel odd(type: i8[M, K], dims: f32[M], fn: s4[N, K]) -> y: f32[M, N] {
        where K <= 4096;
        y[m, n] = sum(k) type[m, k] * fn[n, k] * dims[m];
    }
}

fn main() {
    let (m, k, n) = (1usize, 8usize, 2usize);
    let w = Odd::WEIGHT_LAYOUT.pack(&vec![1; n * k], n, k).unwrap();
    let cpu = Odd::cpu().unwrap();
    let y = cpu.run(&vec![1i8; m * k], &[3.0], &w).unwrap();
    assert_eq!(y, vec![24.0; m * n]);
    let y = cpu
        .run_dims([m, k, n], &vec![1i8; m * k], &[3.0], &w)
        .unwrap();
    assert_eq!(y, vec![24.0; m * n]);
}
