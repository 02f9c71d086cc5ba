//! Front-end diagnostics: every malformed or ill-typed `.qk` file under
//! `tests/diagnostics/` must be refused with the right error code, a primary span
//! that lies inside the source and covers exactly the offending text, and a
//! rendering (file, line, column, caret, label, help) that is pinned with `insta`.
//!
//! Each case is one file named by what is wrong with it; the table below gives its
//! expected code and the exact source text under the primary span (`""` for an
//! empty span, e.g. "expected `;`" pointing between two tokens or at end of file).
//! Regenerate snapshots with `INSTA_UPDATE=always cargo test --test diagnostics`
//! and review every `.snap` by reading it.

use std::path::PathBuf;

use qkc::dsl;

fn case_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/diagnostics")
}

/// Compiles one case and checks everything about its diagnostic.
fn check_case(name: &str, code: &str, under: &str) {
    let path = case_dir().join(format!("{name}.qk"));
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = format!("tests/diagnostics/{name}.qk");
    let d = match dsl::compile(&file, &src) {
        Ok(_) => panic!("{file} compiled, but it is malformed"),
        Err(d) => d,
    };
    assert_eq!(d.code, code, "{file}: wrong code; message: {}", d.message);

    // The primary span lies inside the source, on character boundaries, and covers
    // exactly the offending text.
    let span = d.span.clone();
    assert!(
        span.start <= span.end && span.end <= src.len(),
        "{file}: span {span:?} outside the source ({} bytes)",
        src.len()
    );
    assert!(
        src.is_char_boundary(span.start) && src.is_char_boundary(span.end),
        "{file}: span {span:?} splits a character"
    );
    assert_eq!(
        &src[span.clone()],
        under,
        "{file}: the caret is on the wrong text"
    );
    if under.is_empty() {
        assert!(span.is_empty());
    }
    for (s, label) in &d.related {
        assert!(
            s.start < s.end && s.end <= src.len(),
            "{file}: related span {s:?} ({label}) is empty or outside the source"
        );
    }
    assert!(!d.message.is_empty() && !d.label.is_empty());

    // The rendering names the code, the message and the file at the span's line and
    // column (the message may be wrapped, so compare its first word).
    let rendered = d.render();
    let (line, col) = d.line_col(&src);
    assert!(rendered.contains(&format!("qkc::{code}")), "{rendered}");
    let first_word = d.message.split_whitespace().next().unwrap_or("");
    assert!(rendered.contains(first_word), "{rendered}");
    assert!(
        rendered.contains(&format!("[{file}:{line}:{col}]")),
        "{rendered}"
    );
    assert!(
        rendered.contains(d.label.split_whitespace().next().unwrap_or("")),
        "{rendered}"
    );
    if let Some(h) = &d.help {
        assert!(rendered.contains("help:"), "{rendered}");
        assert!(!h.is_empty());
    }
    insta::assert_snapshot!(name, rendered);
}

macro_rules! cases {
    ($($name:ident => $code:literal, $under:literal;)*) => {
        $(
            #[test]
            fn $name() {
                check_case(stringify!($name), $code, $under);
            }
        )*
        /// Every case in the table, to compare against the files on disk.
        const CASES: &[&str] = &[$(stringify!($name)),*];
    };
}

cases! {
    // Lexer.
    lex_unexpected_char => "lex::char", "+";
    lex_unicode_times => "lex::char", "×";
    lex_hash_comment => "lex::char", "#";
    lex_int_too_large => "lex::int", "99999999999999999999999";
    // Parser, at many grammar points.
    parse_top_level_junk => "parse::unexpected", "fn";
    parse_layout_missing_name => "parse::unexpected", "=";
    parse_layout_missing_eq => "parse::unexpected", "s3";
    parse_layout_bad_spec => "parse::unexpected", "4";
    parse_bad_code_type => "parse::code-type", "x4";
    parse_bad_storage => "parse::unexpected", "packed";
    parse_layout_missing_semi => "parse::eof", "";
    parse_field_missing_colon => "parse::unexpected", "s4";
    parse_bit_range_missing_dotdot => "parse::unexpected", "3";
    parse_kernel_missing_name => "parse::unexpected", "(";
    parse_kernel_missing_arrow => "parse::unexpected", "y";
    parse_param_missing_type => "parse::unexpected", "[";
    parse_param_missing_shape => "parse::unexpected", ",";
    parse_shape_trailing_comma => "parse::unexpected", "]";
    parse_group_size_not_integer => "parse::unexpected", "G";
    parse_unclosed_kernel_body => "parse::eof", "";
    parse_where_missing_le => "parse::unexpected", "<";
    parse_schedule_missing_value => "parse::unexpected", ";";
    parse_missing_sum => "parse::unexpected", "x";
    parse_accumulator_unclosed => "parse::unexpected", "(";
    parse_statement_missing_semi => "parse::unexpected", "";
    parse_access_missing_index => "parse::unexpected", ";";
    parse_unknown_statement => "parse::unexpected", "return";
    // Name resolution.
    unknown_type => "check::unknown-type", "i4";
    unknown_tensor => "check::unknown-tensor", "v";
    unknown_index => "check::unknown-index", "j";
    unknown_dimension => "check::unknown-dim", "L";
    // Shapes, indices and groups.
    rank_mismatch => "check::rank", "w[k]";
    index_dimension_mismatch => "check::index-dim", "n";
    group_mismatch => "check::group-mismatch", "64";
    group_missing_division => "check::group-mismatch", "k";
    group_sizes_mixed => "check::group-mismatch", "64";
    group_splits_pair => "check::group-divisibility", "63";
    group_size_zero => "check::group-size", "0";
    group_on_output_index => "check::group-index", "n / 4";
    unsupported_access_pattern => "check::access-pattern", "w[k, n]";
    two_activations => "check::access-pattern", "x2[m, k]";
    no_weight => "check::no-weight", "y[m, n] = sum(k) x[m, k] * s[n];";
    no_activation => "check::no-activation", "y[m, n] = sum(k) xs[m] * w[n, k];";
    reduction_over_output_dim => "check::index-dim", "k";
    output_not_two_dims => "check::output-shape", "y: f32[M, N, K]";
    // Duplicates and unused names.
    duplicate_param => "check::duplicate-param", "x";
    duplicate_output_name => "check::duplicate-param", "x";
    duplicate_layout => "check::duplicate-layout", "q";
    duplicate_field => "check::duplicate-field", "a";
    duplicate_kernel => "check::duplicate-kernel", "k";
    duplicate_bound => "check::duplicate-bound", "K <= 8192";
    bound_zero => "check::bound", "0";
    unused_param => "check::unused-param", "ws";
    param_used_twice => "check::param-reused", "s";
    // The statement.
    output_read => "check::output-read", "y";
    target_not_output => "check::target", "z";
    target_repeated_index => "check::target-index", "m";
    target_wrong_rank => "check::target-index", "y[m]";
    reduction_is_output_index => "check::reduction-var", "n";
    missing_statement => "check::no-statement", "k";
    two_statements => "check::second-statement", "y[m, n] = sum(k) x[m, k] * v[n, k];";
    // Types by role.
    bad_activation_type => "check::type", "x";
    bad_weight_type => "check::type", "w";
    bad_scale_type => "check::type", "s";
    bad_output_type_i8 => "check::type", "i8";
    bad_output_packed => "check::type", "s4";
    i32_output_with_float_scales => "check::type", "i32";
    // Accumulators and their proofs.
    i32_output_overflow => "bounds::overflow", "y: i32[M, N]";
    sum_i32_unproved => "bounds::overflow", "i32";
    accumulator_f32_for_i8 => "check::accumulator", "f32";
    accumulator_i32_for_f16 => "check::accumulator", "i32";
    // Layouts.
    layout_bits_reversed => "check::layout-bits", "3..6";
    layout_bits_overlap => "check::layout", "lo: s3 @ 3..1";
    layout_bits_wrong_width => "check::layout-bits", "6..4";
    layout_bit_outside_byte => "check::layout-width", "9";
    layout_bits_partly_explicit => "check::layout-bits", "lo: s3";
    layout_too_wide => "check::layout-width", "{ a: s4, b: s4, c: u2 }";
    layout_too_many_fields => "check::layout-fields", "{ a: u2, b: u2, c: u2, d: u2, e: u2 }";
    code_width_too_large => "check::code-width", "s9";
    code_width_too_small => "check::code-width", "s1";
    layout_name_reserved => "check::layout-name", "f16";
    // Schedule hints, missing or extra statements, empty files.
    schedule_unknown_hint => "check::schedule", "unroll";
    schedule_bad_value => "check::schedule", "100";
    empty_file => "check::empty", "";
}

/// Every `.qk` file under `tests/diagnostics/` has a row in the table, and vice versa.
#[test]
fn every_case_file_is_in_the_table() {
    let mut on_disk: Vec<String> = std::fs::read_dir(case_dir())
        .expect("tests/diagnostics exists")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "qk"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    assert!(listed.len() >= 24, "only {} cases", listed.len());
}

/// The checks are not over-eager: the bundled example kernels compile cleanly.
#[test]
fn bundled_examples_compile() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/kernels");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("examples/kernels exists") {
        let p = e.expect("dir entry").path();
        if p.extension().is_some_and(|x| x == "qk") {
            let src = std::fs::read_to_string(&p).expect("readable");
            if let Err(d) = dsl::compile(&p.display().to_string(), &src) {
                panic!("{}", d.render());
            }
            n += 1;
        }
    }
    assert!(n >= 5, "found only {n} examples");
}

/// The fixed `sum<i32>(k)` proof failure names the largest K that would fit,
/// with thousands separators, and suggests the `where` clause that fixes it; adding
/// exactly that bound makes the same kernel compile.
#[test]
fn sum_i32_failure_names_the_bound_and_its_fix_works() {
    let src = std::fs::read_to_string(case_dir().join("sum_i32_unproved.qk")).expect("case file");
    let d = dsl::compile("t.qk", &src).expect_err("refused");
    assert!(d.message.contains("K ≤ 2,097,151"), "{}", d.message);
    assert!(d
        .help
        .as_deref()
        .unwrap_or("")
        .contains("where K <= 2097151;"));
    let fixed = src.replace("{\n    y[m, n]", "{\n    where K <= 2097151;\n    y[m, n]");
    assert_ne!(fixed, src);
    dsl::compile("t.qk", &fixed).expect("the suggested bound is enough");
    let over = src.replace("{\n    y[m, n]", "{\n    where K <= 2097152;\n    y[m, n]");
    assert_eq!(
        dsl::compile("t.qk", &over)
            .expect_err("one more term overflows")
            .code,
        "bounds::overflow"
    );
}
