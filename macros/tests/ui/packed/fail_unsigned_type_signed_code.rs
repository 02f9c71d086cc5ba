#[qkc::packed(storage = stream)]
struct SignedInU8 {
    #[bits(4, signed)]
    x: u8,
}

fn main() {}
