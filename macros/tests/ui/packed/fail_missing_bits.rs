#[qkc::packed(storage = stream)]
struct MissingBits {
    #[bits(4)]
    hi: i8,
    lo: i8,
}

fn main() {}
