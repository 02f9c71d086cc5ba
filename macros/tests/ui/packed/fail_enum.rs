#[qkc::packed(storage = stream)]
enum NotAStruct {
    A,
    B,
}

fn main() {}
