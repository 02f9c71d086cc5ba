#[qkc::packed(storage = stream)]
struct Bad {
    #[bits(4, twos_complement)]
    x: i8,
}

fn main() {}
