#[qkc::packed(storage = byte)]
struct Outside {
    #[bits(8..=5)]
    hi: i8,
    #[bits(2..=0)]
    lo: i8,
}

fn main() {}
