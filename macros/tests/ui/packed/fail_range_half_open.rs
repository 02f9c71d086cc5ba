#[qkc::packed(storage = stream)]
struct HalfOpen {
    #[bits(6..3)]
    hi: i8,
    #[bits(2..0)]
    lo: i8,
}

fn main() {}
