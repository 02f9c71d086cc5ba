#[qkc::packed(storage = stream)]
struct Float {
    #[bits(4)]
    x: f32,
}

fn main() {}
