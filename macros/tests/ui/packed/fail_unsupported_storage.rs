#[qkc::packed(storage = nibble)]
struct Nibble {
    #[bits(4)]
    x: i8,
}

fn main() {}
