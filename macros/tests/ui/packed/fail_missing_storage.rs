#[qkc::packed]
struct NoStorage {
    #[bits(4)]
    x: i8,
}

fn main() {}
