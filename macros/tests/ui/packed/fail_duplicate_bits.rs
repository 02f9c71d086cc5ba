#[qkc::packed(storage = stream)]
struct Twice {
    #[bits(4)]
    #[bits(3)]
    x: i8,
}

fn main() {}
