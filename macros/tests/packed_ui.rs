//! Compile-time tests of `#[qkc::packed]`: layouts that must compile (and run),
//! and one declaration per compile error, with its message in a `.stderr`
//! snapshot (regenerate with `TRYBUILD=overwrite cargo test -p qkc-macros --test packed_ui`).

#[test]
fn packed_ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/packed/pass_*.rs");
    t.compile_fail("tests/ui/packed/fail_*.rs");
}
