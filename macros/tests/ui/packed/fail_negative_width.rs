#[qkc::packed(storage = stream)]
struct Negative {
    #[bits(-3)]
    x: i8,
}

fn main() {}
