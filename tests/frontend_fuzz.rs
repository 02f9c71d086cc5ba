//! Robustness of the front end: `qkc_dsl::compile` must never panic, whatever it
//! is fed, and every error it returns must point inside the source and render.
//!
//! Inputs: arbitrary Unicode strings, "token soup" drawn from the language's own
//! tokens (keywords, type names, punctuation, awkward integers), and mutations of
//! the bundled example kernels (delete / insert / swap / duplicate a byte or a
//! token, several at a time), plus exhaustive single-token deletions and every
//! prefix of every example. Programs that still compile are also run through the
//! reference interpreter on small random inputs, which must not panic either.

use std::path::PathBuf;

use proptest::prelude::*;
use qkc::dsl;
use qkc::dsl::host::random_inputs;
use qkc::dsl::interp;
use qkc::dsl::ir::Dims;

/// The bundled example kernels, read once.
fn examples() -> &'static [String] {
    static EX: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    EX.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/kernels");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("examples/kernels exists")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "qk"))
            .collect();
        paths.sort();
        let srcs: Vec<String> = paths
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("readable example"))
            .collect();
        assert!(srcs.len() >= 5, "expected the bundled examples");
        srcs
    })
}

/// Compiles `src` and checks the invariants that hold for every input. Returns
/// whether it compiled.
fn compile_checked(src: &str) -> bool {
    match dsl::compile("fuzz.qk", src) {
        Ok(prog) => {
            assert!(
                !prog.kernels.is_empty() || !prog.layouts.is_empty(),
                "an accepted module declares something"
            );
            for k in &prog.kernels {
                run_small(k);
            }
            true
        }
        Err(d) => {
            assert!(
                d.span.start <= d.span.end && d.span.end <= src.len(),
                "span {:?} outside {} bytes ({}: {})",
                d.span,
                src.len(),
                d.code,
                d.message
            );
            assert!(src.is_char_boundary(d.span.start) && src.is_char_boundary(d.span.end));
            for (s, _) in &d.related {
                assert!(
                    s.start <= s.end && s.end <= src.len(),
                    "related span {s:?} outside the source"
                );
            }
            assert!(!d.message.is_empty());
            let r = d.render();
            assert!(
                r.contains(&format!("qkc::{}", d.code)),
                "render lost the code: {r}"
            );
            assert!(r.contains("fuzz.qk"), "render lost the file name: {r}");
            let (line, col) = d.line_col(src);
            assert!(line >= 1 && col >= 1);
            false
        }
    }
}

/// Runs a kernel that compiled on small random inputs (dims clamped to their bounds).
fn run_small(k: &dsl::ir::Kernel) {
    let values: Vec<u64> = k
        .dims
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let want = if i == k.k { 37 } else { 3 };
            want.min(d.max)
        })
        .collect();
    let dims = Dims { values };
    let inputs = random_inputs(k, &dims, 7);
    let out = interp::run(k, &dims, &inputs).expect("random inputs fit the kernel");
    assert_eq!(
        out.len(),
        (dims.values[k.m] * dims.values[k.n]) as usize,
        "output has M*N elements"
    );
}

/// Spellings of the language's tokens, including near-misses and edge values.
const TOKENS: &[&str] = &[
    "layout",
    "kernel",
    "sum",
    "where",
    "schedule",
    "stream",
    "byte",
    "x",
    "w",
    "y",
    "xs",
    "ws",
    "m",
    "n",
    "k",
    "M",
    "N",
    "K",
    "i8",
    "i32",
    "i64",
    "f16",
    "bf16",
    "f32",
    "s1",
    "s2",
    "s3",
    "s4",
    "s8",
    "s9",
    "u2",
    "u4",
    "q3p5",
    "q3p5b",
    "hi",
    "lo",
    "tile_n",
    "threads",
    "vector",
    "0",
    "1",
    "2",
    "3",
    "7",
    "8",
    "64",
    "128",
    "65536",
    "2147483647",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "->",
    "<=",
    "..",
    "=",
    ";",
    ":",
    ",",
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "/",
    "*",
    "<",
    ">",
    "@",
    "//",
    "\n",
    "-",
    ".",
    "#",
];

/// A token soup: 0..60 tokens joined by spaces (or by nothing, to glue tokens).
fn token_soup() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(TOKENS), 0..60),
        any::<bool>(),
    )
        .prop_map(|(toks, glue)| toks.join(if glue { "" } else { " " }))
}

/// One edit of a source text.
#[derive(Clone, Debug)]
enum Edit {
    DeleteByte(usize),
    InsertByte(usize, u8),
    SwapBytes(usize, usize),
    DuplicateByte(usize),
    DeleteToken(usize),
    InsertToken(usize, &'static str),
    SwapTokens(usize, usize),
    DuplicateToken(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::DeleteByte),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::InsertByte(i, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Edit::SwapBytes(i, j)),
        any::<usize>().prop_map(Edit::DuplicateByte),
        any::<usize>().prop_map(Edit::DeleteToken),
        (any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(i, t)| Edit::InsertToken(i, t)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Edit::SwapTokens(i, j)),
        any::<usize>().prop_map(Edit::DuplicateToken),
    ]
}

/// Source split into tokens (by the real lexer) and the text between them, so that
/// token edits keep comments and spacing elsewhere intact.
fn token_spans(src: &str) -> Vec<std::ops::Range<usize>> {
    match dsl::lexer::lex(src) {
        Ok(toks) => toks.into_iter().map(|(_, s)| s).collect(),
        // Not lexable any more: fall back to whitespace-separated words.
        Err(_) => {
            let mut out = Vec::new();
            let mut start = None;
            for (i, c) in src.char_indices() {
                match (c.is_whitespace(), start) {
                    (false, None) => start = Some(i),
                    (true, Some(s)) => {
                        out.push(s..i);
                        start = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = start {
                out.push(s..src.len());
            }
            out
        }
    }
}

fn apply(src: &str, e: &Edit) -> String {
    let mut bytes = src.as_bytes().to_vec();
    let n = bytes.len();
    let bytes_to_string = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    match *e {
        Edit::DeleteByte(i) if n > 0 => {
            bytes.remove(i % n);
            bytes_to_string(bytes)
        }
        Edit::InsertByte(i, b) => {
            bytes.insert(i % (n + 1), b);
            bytes_to_string(bytes)
        }
        Edit::SwapBytes(i, j) if n > 0 => {
            bytes.swap(i % n, j % n);
            bytes_to_string(bytes)
        }
        Edit::DuplicateByte(i) if n > 0 => {
            let b = bytes[i % n];
            bytes.insert(i % n, b);
            bytes_to_string(bytes)
        }
        Edit::DeleteToken(i)
        | Edit::DuplicateToken(i)
        | Edit::SwapTokens(i, _)
        | Edit::InsertToken(i, _) => {
            let toks = token_spans(src);
            if toks.is_empty() {
                return src.to_string();
            }
            let t = toks[i % toks.len()].clone();
            match *e {
                Edit::DeleteToken(_) => format!("{}{}", &src[..t.start], &src[t.end..]),
                Edit::DuplicateToken(_) => format!("{} {}", &src[..t.end], &src[t.start..]),
                Edit::InsertToken(_, tok) => {
                    format!("{} {tok} {}", &src[..t.start], &src[t.start..])
                }
                Edit::SwapTokens(_, j) => {
                    let u = toks[j % toks.len()].clone();
                    let (a, b) = if t.start <= u.start { (t, u) } else { (u, t) };
                    if a == b {
                        return src.to_string();
                    }
                    format!(
                        "{}{}{}{}{}",
                        &src[..a.start],
                        &src[b.clone()],
                        &src[a.end..b.start],
                        &src[a.clone()],
                        &src[b.end..]
                    )
                }
                _ => unreachable!(),
            }
        }
        _ => src.to_string(),
    }
}

/// Cases per property: `base`, or `QKC_FUZZ_CASES` when set (for long local runs).
fn cases(base: u32) -> ProptestConfig {
    let cases = std::env::var("QKC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(base);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(10_000))]

    /// Arbitrary Unicode text.
    #[test]
    fn random_strings_never_panic(s in any::<String>()) {
        compile_checked(&s);
    }

    /// Printable ASCII biased towards the language's punctuation.
    #[test]
    fn random_ascii_never_panics(s in "[a-zA-Z0-9_ \n\t;:,.{}\\[\\]()<>=/*@#+-]{0,200}") {
        compile_checked(&s);
    }

    /// Sequences of the language's own tokens.
    #[test]
    fn token_soup_never_panics(s in token_soup()) {
        compile_checked(&s);
    }

    /// Kernel-shaped soup: a kernel header around random tokens, so the checker
    /// (not only the parser) sees most of them.
    #[test]
    fn kernel_shaped_soup_never_panics(body in token_soup(), params in token_soup()) {
        let src = format!("kernel k(x: i8[M, K], w: s4[N, K]{params}) -> y: f32[M, N] {{ {body} }}");
        compile_checked(&src);
    }
}

proptest! {
    #![proptest_config(cases(40_000))]

    /// One to four edits of a bundled example.
    #[test]
    fn mutated_examples_never_panic(which in any::<prop::sample::Index>(), edits in prop::collection::vec(edit(), 1..5)) {
        let ex = examples();
        let mut src = ex[which.index(ex.len())].clone();
        for e in &edits {
            src = apply(&src, e);
        }
        compile_checked(&src);
    }
}

/// Every single-token deletion of every example: none panics, and (since every
/// token of the examples matters except the optional storage mode and hints) most
/// of them are refused.
#[test]
fn every_single_token_deletion() {
    let (mut total, mut refused) = (0, 0);
    for src in examples() {
        assert!(compile_checked(src), "the example itself compiles");
        for t in token_spans(src) {
            let mutated = format!("{}{}", &src[..t.start], &src[t.end..]);
            total += 1;
            if !compile_checked(&mutated) {
                refused += 1;
            }
        }
    }
    assert!(total > 300, "only {total} tokens");
    assert!(
        refused * 10 >= total * 9,
        "only {refused} of {total} deletions were refused"
    );
}

/// Every prefix of every example (cut at each character boundary).
#[test]
fn every_prefix_of_every_example() {
    for src in examples() {
        for (i, _) in src.char_indices() {
            compile_checked(&src[..i]);
        }
    }
}
