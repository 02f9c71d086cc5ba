#[qkc::packed(storage = stream, order = lsb_first)]
struct Unknown {
    #[bits(4)]
    x: i8,
}

fn main() {}
