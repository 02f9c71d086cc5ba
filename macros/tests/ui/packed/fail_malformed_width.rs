#[qkc::packed(storage = stream)]
struct Malformed {
    #[bits(four)]
    x: i8,
}

fn main() {}
