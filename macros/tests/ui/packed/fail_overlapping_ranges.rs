#[qkc::packed(storage = stream)]
struct Overlap {
    #[bits(6..=3)]
    hi: i8,
    #[bits(4..=0)]
    lo: i8,
}

fn main() {}
