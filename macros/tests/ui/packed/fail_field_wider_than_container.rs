#[qkc::packed(storage = stream)]
struct Nine {
    #[bits(9)]
    x: i16,
}

fn main() {}
