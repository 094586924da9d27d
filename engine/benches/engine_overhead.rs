//! Benchmark placeholder: replaced by its crate owner.
fn main() {}
