//! `#[qkc::packed]` layouts bound to a built-in and to a declared `.qk` layout;
//! the weights are packed with the Rust type's descriptor.

#[qkc::packed(storage = stream)]
pub struct Q3p5 {
    #[bits(4)]
    hi: i8,
    #[bits(3)]
    lo: i8,
}

#[qkc::packed(storage = byte)]
pub struct Lohi {
    #[bits(1..=0)]
    a: u8,
    #[bits(4..=2)]
    b: u8,
}

qkc::quant_kernel! {
    use layout Q3p5 as q3p5;
    use layout Lohi as lohi;

    /// The built-in `q3p5`, checked against `Q3p5`.
    pub Builtin = kernel builtin(x: i8[M, K], xs: f32[M], w: q3p5[N, K], ws: f16[N, K / 64]) -> y: f32[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 64] * xs[m];
    }

    /// A declared layout, checked against `Lohi`.
    pub Declared = layout lohi = { a: u2 @ 1..0, b: u3 @ 4..2 } byte;
    kernel declared(x: f32[M, K], xs: f32[M], w: lohi[N, K]) -> y: f32[M, N] {
        y[m, n] = sum(k) x[m, k] * w[n, k] * xs[m];
    }
}

fn main() {
    assert_eq!(Builtin::WEIGHT_LAYOUT, Q3p5::LAYOUT);
    assert_eq!(Declared::WEIGHT_LAYOUT, Lohi::LAYOUT);

    let (m, k, n) = (2usize, 128usize, 3usize);
    let x: Vec<i8> = (0..m * k).map(|i| (i % 7) as i8 - 3).collect();
    let units: Vec<u8> = (0..n * k / 2)
        .map(|i| {
            Q3p5 {
                hi: (i % 16) as i8 - 8,
                lo: (i % 8) as i8 - 4,
            }
            .pack()
        })
        .collect();
    let codes: Vec<i32> = units
        .iter()
        .flat_map(|&u| {
            let q = Q3p5::unpack(u);
            [q.hi as i32, q.lo as i32]
        })
        .collect();
    let w = Q3p5::LAYOUT.pack(&codes, n, k).unwrap();
    let ws = vec![qkc::half::f16::ONE; n * 2];
    let y = Builtin::cpu()
        .unwrap()
        .run(&x, &[1.0, 1.0], &w, &ws)
        .unwrap();
    for (r, yr) in y.chunks(n).enumerate() {
        for (c, &v) in yr.iter().enumerate() {
            let want: i32 = (0..k).map(|i| x[r * k + i] as i32 * codes[c * k + i]).sum();
            assert_eq!(v, want as f32);
        }
    }

    // Declared: one byte per (a, b) pair.
    let x = vec![1.0f32; m * k];
    let xs = vec![2.0f32; m];
    let w: Vec<u8> = (0..n * k / 2).map(|_| Lohi { a: 3, b: 5 }.pack()).collect();
    let y = Declared::cpu().unwrap().run(&x, &xs, &w).unwrap();
    assert_eq!(y, vec![2.0 * (k as f32 / 2.0) * 8.0; m * n]);
}
