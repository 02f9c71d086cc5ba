#[qkc::packed(storage = stream)]
struct Zero {
    #[bits(4)]
    hi: i8,
    #[bits(0)]
    lo: i8,
}

fn main() {}
