#[qkc::packed(storage = byte)]
struct Five {
    #[bits(1, unsigned)]
    a: u8,
    #[bits(1, unsigned)]
    b: u8,
    #[bits(1, unsigned)]
    c: u8,
    #[bits(1, unsigned)]
    d: u8,
    #[bits(1, unsigned)]
    e: u8,
}

fn main() {}
