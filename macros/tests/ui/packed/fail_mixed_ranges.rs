#[qkc::packed(storage = stream)]
struct Mixed {
    #[bits(6..=3)]
    hi: i8,
    #[bits(3)]
    lo: i8,
}

fn main() {}
