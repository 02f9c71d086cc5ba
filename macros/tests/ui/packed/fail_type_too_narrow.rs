#[qkc::packed(storage = stream)]
struct Narrow {
    #[bits(8, unsigned)]
    x: i8,
}

fn main() {}
