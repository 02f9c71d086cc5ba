#[qkc::packed(storage = stream)]
struct Unit;

fn main() {}
