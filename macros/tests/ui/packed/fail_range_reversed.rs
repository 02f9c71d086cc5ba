#[qkc::packed(storage = stream)]
struct Reversed {
    #[bits(3..=6)]
    hi: i8,
    #[bits(2..=0)]
    lo: i8,
}

fn main() {}
