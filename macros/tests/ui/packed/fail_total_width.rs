#[qkc::packed(storage = stream)]
struct TooWide {
    #[bits(4)]
    hi: i8,
    #[bits(5)]
    lo: i8,
}

fn main() {}
