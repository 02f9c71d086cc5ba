#[qkc::packed(storage = stream)]
struct Tuple(#[bits(4)] i8, #[bits(3)] i8);

fn main() {}
