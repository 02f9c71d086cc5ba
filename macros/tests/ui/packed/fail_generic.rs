#[qkc::packed(storage = stream)]
struct Generic<T> {
    #[bits(4)]
    x: i8,
    marker: std::marker::PhantomData<T>,
}

fn main() {}
