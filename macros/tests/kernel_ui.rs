//! Compile-time tests of `qkc::quant_kernel!`: kernels that compile and run a
//! small check, and one mistake per compile-fail case with its message in a
//! `.stderr` snapshot, the caret on the offending token (regenerate with
//! `TRYBUILD=overwrite cargo test -p qkc-macros --test kernel_ui`, then read every snapshot).

#[test]
fn kernel_ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/kernel/pass_*.rs");
    t.compile_fail("tests/ui/kernel/fail_*.rs");
}
