//! The `qkc` binary end to end: `check --bounds` output, `run --target ref` with
//! `--dump-inputs`/`--inputs`/`--save` round trips checked against
//! `qkc_dsl::interp::run` on the inputs read back, runs on safetensors inputs that
//! the test writes itself, and the error paths (wrong tensor name, dtype or length
//! in `--inputs`, malformed `.qk`, bad `--dims`), which must exit non-zero with a
//! message naming the culprit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use half::{bf16, f16};
use qkc::dsl;
use qkc::dsl::host::HostBuf;
use qkc::dsl::interp;
use qkc::dsl::ir::{Dims, Kernel};
use safetensors::{Dtype, SafeTensors};

const FLAGSHIP: &str = "examples/kernels/gemv_w3p5.qk";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the built binary from the repository root.
fn qkc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qkc"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the qkc binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "qkc failed:\nstdout:\n{}\nstderr:\n{}",
        stdout(&o),
        stderr(&o)
    );
    o
}

/// Runs qkc expecting failure; returns stderr.
fn fails(args: &[&str]) -> String {
    let o = qkc(args);
    assert!(
        !o.status.success(),
        "qkc {args:?} succeeded:\n{}",
        stdout(&o)
    );
    stderr(&o)
}

/// A unique path under the system temp dir, removed when dropped.
struct Tmp(PathBuf);

impl Tmp {
    fn new(name: &str) -> Tmp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Tmp(std::env::temp_dir().join(format!("qkc-cli-test-{}-{n}-{name}", std::process::id())))
    }
    fn s(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn compile_file(path: &str) -> Kernel {
    let src = std::fs::read_to_string(root().join(path)).expect("kernel file");
    match dsl::compile(path, &src) {
        Ok(p) => p.kernels[0].clone(),
        Err(d) => panic!("{}", d.render()),
    }
}

/// Converts a stored tensor back to a host buffer by its dtype.
fn to_buf(dtype: Dtype, b: &[u8]) -> HostBuf {
    match dtype {
        Dtype::U8 => HostBuf::Packed(b.to_vec()),
        Dtype::I8 => HostBuf::I8(b.iter().map(|&x| x as i8).collect()),
        Dtype::I32 => HostBuf::I32(
            b.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::F16 => HostBuf::F16(
            b.chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        Dtype::BF16 => HostBuf::BF16(
            b.chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        Dtype::F32 => HostBuf::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        other => panic!("unexpected dtype {other:?}"),
    }
}

/// The kernel's inputs from a safetensors file, in parameter order.
fn read_inputs(k: &Kernel, path: &Path) -> Vec<HostBuf> {
    let bytes = std::fs::read(path).expect("inputs file");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    k.inputs
        .iter()
        .map(|p| {
            let v = st.tensor(&p.tensor.name).expect("tensor per parameter");
            to_buf(v.dtype(), v.data())
        })
        .collect()
}

/// The single output tensor of a `--save` file: (name, dtype, shape, bytes).
fn read_output(path: &Path) -> (String, Dtype, Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).expect("output file");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut all = st.tensors();
    assert_eq!(all.len(), 1, "one output tensor");
    let (name, v) = all.pop().expect("one");
    (name, v.dtype(), v.shape().to_vec(), v.data().to_vec())
}

/// Writes named tensors to a safetensors file.
fn write_tensors(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, dt, shape, data)| {
            let v = safetensors::tensor::TensorView::new(*dt, shape.clone(), data)
                .expect("consistent tensor");
            (n.to_string(), v)
        })
        .collect();
    let bytes = safetensors::serialize(views, None).expect("serialize");
    std::fs::write(path, bytes).expect("write inputs");
}

/// SplitMix64, the test's own source of random data.
struct Rand(u64);

impl Rand {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn int(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u64) as i32
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

// ---------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------

#[test]
fn check_bounds_prints_the_accumulator_range_and_proved() {
    let out = stdout(&ok(qkc(&["check", FLAGSHIP, "--bounds"])));
    assert!(out.contains("kernel gemv_w3p5: ok"), "{out}");
    assert!(
        out.contains("layout q3p5 = { hi: s4 @ 6..3, lo: s3 @ 2..0 } stream"),
        "{out}"
    );
    // 64 s4 products in [-1016, 1024] and 64 s3 products in [-508, 512] per group of 128.
    assert!(
        out.contains("over a group of 128 lies in [-97,536, 98,304]"),
        "{out}"
    );
    assert!(
        out.contains("i8 × s4 ∈ [-1016, 1024], i8 × s3 ∈ [-508, 512]"),
        "{out}"
    );
    assert!(
        out.contains("proved   acc.fits      the i32 accumulator cannot overflow"),
        "{out}"
    );
    assert!(out.contains("proved   acc.range"), "{out}");
    assert!(
        out.contains("summary: 4 proved, 0 widened, 0 notes, 0 failed"),
        "{out}"
    );
    // Without --bounds no obligations are printed.
    let plain = stdout(&ok(qkc(&["check", FLAGSHIP])));
    assert!(
        plain.contains("kernel gemv_w3p5: ok") && !plain.contains("acc.range"),
        "{plain}"
    );
}

#[test]
fn check_bounds_reports_a_widened_accumulator() {
    // i8 × s4 over an unbounded K does not fit i32 (K ≤ 2,097,151): widened to i64.
    let f = Tmp::new("widen.qk");
    std::fs::write(
        &f.0,
        "kernel wide(x: i8[M, K], w: s4[N, K]) -> y: f32[M, N] {\n    y[m, n] = sum(k) x[m, k] * w[n, k];\n}\n",
    )
    .expect("write");
    let out = stdout(&ok(qkc(&["check", f.s(), "--bounds"])));
    assert!(
        out.contains("widened  acc.fits      the i64 accumulator cannot overflow"),
        "{out}"
    );
    assert!(out.contains("i32 needs K ≤ 2,097,151"), "{out}");
    assert!(out.contains("1 widened"), "{out}");
}

#[test]
fn malformed_qk_exits_nonzero_with_the_diagnostic() {
    let f = Tmp::new("bad.qk");
    std::fs::write(
        &f.0,
        "kernel k(x: i8[M, K], w: s4[N, K]) -> y: f32[M, N] {\n    y[m, n] = sum(k) x[m, k] * v[n, k];\n}\n",
    )
    .expect("write");
    for args in [
        vec!["check", f.s()],
        vec!["run", f.s(), "--dims", "M=1,N=2,K=4"],
        vec!["emit", f.s(), "--target", "ir"],
    ] {
        let err = fails(&args);
        assert!(err.contains("qkc::check::unknown-tensor"), "{err}");
        assert!(err.contains("unknown tensor `v`"), "{err}");
        assert!(
            err.contains(&format!("{}:2:32", f.s())),
            "file:line:col missing: {err}"
        );
        assert!(
            err.contains("x[m, k] * v[n, k]"),
            "source line missing: {err}"
        );
    }
    // A missing file is an error too.
    let err = fails(&["check", "/nonexistent/qkc/kernel.qk"]);
    assert!(err.contains("cannot read"), "{err}");
}

// ---------------------------------------------------------------------------
// run: round trips and the reference
// ---------------------------------------------------------------------------

#[test]
fn dump_inputs_then_rerun_gives_identical_output_equal_to_the_interpreter() {
    let (a, b, c) = (
        Tmp::new("a.safetensors"),
        Tmp::new("b.safetensors"),
        Tmp::new("c.safetensors"),
    );
    let first = stdout(&ok(qkc(&[
        "run",
        FLAGSHIP,
        "--target",
        "ref",
        "--dims",
        "M=3,N=8,K=200",
        "--seed",
        "11",
        "--dump-inputs",
        a.s(),
        "--save",
        b.s(),
    ])));
    assert!(
        first.contains("kernel gemv_w3p5 on ref [M=3,K=200,N=8]"),
        "{first}"
    );
    // Dims inferred from the inputs.
    let second = stdout(&ok(qkc(&[
        "run",
        FLAGSHIP,
        "--target",
        "ref",
        "--inputs",
        a.s(),
        "--save",
        c.s(),
    ])));
    assert!(second.contains("[M=3,K=200,N=8]"), "{second}");
    let (fb, fc) = (
        std::fs::read(&b.0).expect("b"),
        std::fs::read(&c.0).expect("c"),
    );
    assert_eq!(
        fb, fc,
        "re-running on the dumped inputs changed the saved output"
    );
    let checksum = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("checksum:"))
            .map(str::to_string)
    };
    assert_eq!(checksum(&first), checksum(&second));
    assert!(checksum(&first).is_some());

    // The dumped inputs follow the convention: one tensor per parameter, packed
    // weights as U8 [N, row_bytes].
    let bytes = std::fs::read(&a.0).expect("a");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut names = st.names();
    names.sort();
    assert_eq!(names, vec!["w", "ws", "x", "xs"]);
    let w = st.tensor("w").expect("w");
    assert_eq!((w.dtype(), w.shape()), (Dtype::U8, &[8usize, 88][..])); // 100 units × 7 bits
    let ws = st.tensor("ws").expect("ws");
    assert_eq!((ws.dtype(), ws.shape()), (Dtype::F16, &[8usize, 2][..])); // ceil(200 / 128)
    assert_eq!(st.tensor("x").expect("x").dtype(), Dtype::I8);

    // The saved output is what the interpreter computes on the dumped inputs.
    let k = compile_file(FLAGSHIP);
    let dims = k
        .dims_from_pairs(&[("M".into(), 3), ("N".into(), 8), ("K".into(), 200)])
        .expect("dims");
    let inputs = read_inputs(&k, &a.0);
    assert!(
        inputs[0].to_f64().iter().any(|&v| v != 0.0),
        "random activations are not all zero"
    );
    let want = interp::run(&k, &dims, &inputs).expect("interpreter runs");
    let (name, dtype, shape, data) = read_output(&b.0);
    assert_eq!((name.as_str(), dtype, shape), ("y", Dtype::F32, vec![3, 8]));
    assert_eq!(data, want.as_bytes());
    assert!(want.to_f64().iter().any(|&v| v != 0.0));

    // Another seed gives other inputs and another output.
    let d = Tmp::new("d.safetensors");
    ok(qkc(&[
        "run",
        FLAGSHIP,
        "--dims",
        "M=3,N=8,K=200",
        "--seed",
        "12",
        "--save",
        d.s(),
    ]));
    assert_ne!(read_output(&d.0).3, data, "the seed is ignored");
}

/// Runs `kernel_path` on inputs the test writes itself (dims inferred) and compares
/// the saved output with the interpreter on the same buffers.
fn run_own_inputs(
    kernel_path: &str,
    dims: (usize, usize, usize),
    tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>,
) {
    let (m, n, kk) = dims;
    let inp = Tmp::new("own-in.safetensors");
    let out = Tmp::new("own-out.safetensors");
    write_tensors(&inp.0, &tensors);
    let o = stdout(&ok(qkc(&[
        "run",
        kernel_path,
        "--target",
        "ref",
        "--inputs",
        inp.s(),
        "--save",
        out.s(),
    ])));
    assert!(
        o.contains(&format!("M={m}"))
            && o.contains(&format!("N={n}"))
            && o.contains(&format!("K={kk}")),
        "{o}"
    );
    let k = compile_file(kernel_path);
    let d: Dims = k
        .dims_from_pairs(&[
            ("M".into(), m as u64),
            ("N".into(), n as u64),
            ("K".into(), kk as u64),
        ])
        .expect("dims");
    // Buffers in parameter order, straight from what the test wrote.
    let bufs: Vec<HostBuf> = k
        .inputs
        .iter()
        .map(|p| {
            let (_, dt, _, data) = tensors
                .iter()
                .find(|t| t.0 == p.tensor.name)
                .expect("written");
            to_buf(*dt, data)
        })
        .collect();
    let want = interp::run(&k, &d, &bufs).expect("interpreter runs");
    let (name, _, shape, data) = read_output(&out.0);
    assert_eq!(name, k.output.name);
    assert_eq!(shape, vec![m, n]);
    assert_eq!(
        data,
        want.as_bytes(),
        "CLI output differs from the interpreter"
    );
    assert!(
        want.to_f64().iter().any(|&v| v != 0.0),
        "degenerate all-zero output"
    );
}

#[test]
fn own_inputs_for_the_flagship() {
    let mut r = Rand(2024);
    let (m, n, k) = (2usize, 5usize, 256usize);
    let layout = dsl::layout::builtin("q3p5").expect("q3p5");
    let codes: Vec<i32> = (0..n * k)
        .map(|i| {
            if i & 1 == 0 {
                r.int(-8, 7)
            } else {
                r.int(-4, 3)
            }
        })
        .collect();
    let w = layout.pack(&codes, n, k).expect("codes in range");
    assert_eq!(w.len(), n * 112); // 128 units × 7 bits = 112 bytes per row
    let x: Vec<u8> = (0..m * k).map(|_| r.int(-128, 127) as i8 as u8).collect();
    let xs: Vec<u8> = (0..m)
        .flat_map(|_| (0.01 + r.unit()).to_le_bytes())
        .collect();
    let ws: Vec<u8> = (0..n * 2)
        .flat_map(|_| f16::from_f32(0.05 + r.unit() / 8.0).to_le_bytes())
        .collect();
    run_own_inputs(
        FLAGSHIP,
        (m, n, k),
        vec![
            ("x", Dtype::I8, vec![m, k], x),
            ("xs", Dtype::F32, vec![m], xs),
            ("w", Dtype::U8, vec![n, 112], w),
            ("ws", Dtype::F16, vec![n, 2], ws),
        ],
    );
}

#[test]
fn own_inputs_for_the_exact_i32_kernel_with_odd_k() {
    let mut r = Rand(77);
    let (m, n, k) = (3usize, 4usize, 101usize);
    let layout = dsl::layout::builtin("s3").expect("s3");
    let codes: Vec<i32> = (0..n * k).map(|_| r.int(-4, 3)).collect();
    let rb = layout.row_bytes(k);
    assert_eq!(rb, 38); // ceil(101 × 3 / 8)
    let w = layout.pack(&codes, n, k).expect("codes in range");
    let x: Vec<u8> = (0..m * k).map(|_| r.int(-128, 127) as i8 as u8).collect();
    run_own_inputs(
        "examples/kernels/matmul_i8_s3.qk",
        (m, n, k),
        vec![
            ("x", Dtype::I8, vec![m, k], x),
            ("w", Dtype::U8, vec![n, rb], w),
        ],
    );
}

#[test]
fn own_inputs_for_f16_activations_and_f16_output() {
    let mut r = Rand(5);
    let (m, n, k) = (1usize, 7usize, 130usize); // 2 groups of 128, the last one of 2
    let layout = dsl::layout::builtin("q3p5").expect("q3p5");
    let codes: Vec<i32> = (0..n * k)
        .map(|i| {
            if i & 1 == 0 {
                r.int(-8, 7)
            } else {
                r.int(-4, 3)
            }
        })
        .collect();
    let rb = layout.row_bytes(k);
    let w = layout.pack(&codes, n, k).expect("codes in range");
    let x: Vec<u8> = (0..m * k)
        .flat_map(|_| f16::from_f32(r.unit() * 2.0 - 1.0).to_le_bytes())
        .collect();
    let ws: Vec<u8> = (0..n * 2)
        .flat_map(|_| f16::from_f32(0.01 + r.unit() / 16.0).to_le_bytes())
        .collect();
    run_own_inputs(
        "examples/kernels/gemv_f16_w3p5.qk",
        (m, n, k),
        vec![
            ("x", Dtype::F16, vec![m, k], x),
            ("w", Dtype::U8, vec![n, rb], w),
            ("ws", Dtype::F16, vec![n, 2], ws),
        ],
    );
}

// ---------------------------------------------------------------------------
// run: errors
// ---------------------------------------------------------------------------

/// Valid flagship inputs at M=1, N=4, K=256, as (name, dtype, shape, bytes).
fn flagship_tensors() -> Vec<(&'static str, Dtype, Vec<usize>, Vec<u8>)> {
    let mut r = Rand(9);
    let (m, n, k) = (1usize, 4usize, 256usize);
    vec![
        (
            "x",
            Dtype::I8,
            vec![m, k],
            (0..m * k).map(|_| r.int(-128, 127) as u8).collect(),
        ),
        ("xs", Dtype::F32, vec![m], 0.02f32.to_le_bytes().to_vec()),
        (
            "w",
            Dtype::U8,
            vec![n, 112],
            (0..n * 112).map(|_| r.next() as u8).collect(),
        ),
        (
            "ws",
            Dtype::F16,
            vec![n, 2],
            (0..n * 2)
                .flat_map(|_| f16::from_f32(0.1).to_le_bytes())
                .collect(),
        ),
    ]
}

/// Writes `tensors` and runs the flagship on them with `extra` args; returns stderr.
fn run_fails_on(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], extra: &[&str]) -> String {
    let inp = Tmp::new("err-in.safetensors");
    write_tensors(&inp.0, tensors);
    let mut args = vec!["run", FLAGSHIP, "--target", "ref", "--inputs", inp.s()];
    args.extend_from_slice(extra);
    fails(&args)
}

#[test]
fn the_valid_error_fixture_runs() {
    let inp = Tmp::new("fixture.safetensors");
    write_tensors(&inp.0, &flagship_tensors());
    ok(qkc(&["run", FLAGSHIP, "--inputs", inp.s()]));
}

#[test]
fn inputs_with_a_wrong_tensor_name_are_refused() {
    let mut t = flagship_tensors();
    t[3].0 = "scales";
    let err = run_fails_on(&t, &[]);
    assert!(err.contains("no tensor named `ws`"), "{err}");
    assert!(
        err.contains("scales"),
        "the message lists what the file holds: {err}"
    );
}

#[test]
fn inputs_with_a_wrong_dtype_are_refused() {
    let mut t = flagship_tensors();
    // ws as f32 instead of f16 (same element count, twice the bytes).
    t[3] = (
        "ws",
        Dtype::F32,
        vec![4, 2],
        (0..8).flat_map(|_| 0.1f32.to_le_bytes()).collect(),
    );
    let err = run_fails_on(&t, &[]);
    assert!(
        err.contains("`ws`") && err.contains("F32") && err.contains("F16"),
        "{err}"
    );

    // The packed weight as I8 instead of U8.
    let mut t = flagship_tensors();
    t[2].1 = Dtype::I8;
    let err = run_fails_on(&t, &[]);
    assert!(
        err.contains("`w`") && err.contains("I8") && err.contains("U8"),
        "{err}"
    );
}

#[test]
fn inputs_with_a_wrong_length_are_refused() {
    // Packed rows one byte short (dims inferred from the other tensors).
    let mut t = flagship_tensors();
    t[2] = ("w", Dtype::U8, vec![4, 111], vec![0x5a; 4 * 111]);
    let err = run_fails_on(&t, &[]);
    assert!(
        err.contains("`w`") && err.contains("444") && err.contains("448"),
        "{err}"
    );

    // Activations for K = 255 while --dims says K = 256.
    let mut t = flagship_tensors();
    t[0] = ("x", Dtype::I8, vec![1, 255], vec![3; 255]);
    let err = run_fails_on(&t, &["--dims", "M=1,N=4,K=256"]);
    assert!(
        err.contains("`x`") && err.contains("255") && err.contains("256"),
        "{err}"
    );

    // Group scales for floor(256 / 128) + 1 groups.
    let mut t = flagship_tensors();
    t[3] = ("ws", Dtype::F16, vec![4, 3], vec![0x3c; 4 * 3 * 2]);
    let err = run_fails_on(&t, &[]);
    assert!(err.contains("`ws`"), "{err}");
}

#[test]
fn inputs_that_are_not_safetensors_are_refused() {
    let f = Tmp::new("junk.safetensors");
    std::fs::write(&f.0, b"definitely not a safetensors file").expect("write");
    let err = fails(&["run", FLAGSHIP, "--inputs", f.s()]);
    assert!(err.contains("not a safetensors file"), "{err}");
    let err = fails(&[
        "run",
        FLAGSHIP,
        "--inputs",
        "/nonexistent/qkc/in.safetensors",
    ]);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn bad_dims_are_refused() {
    let cases: [(&str, &[&str]); 6] = [
        ("M=1,N=8", &["missing a value for dimension `K`"]),
        ("M=1,N=8,K=abc", &["bad value `abc`", "`K`"]),
        ("M=1,N=8,K=256,Q=3", &["no dimension `Q`", "M, K, N"]),
        ("M=9,N=8,K=256", &["M = 9", "M <= 8"]),
        ("M=1,N=0,K=256", &["N = 0"]),
        ("M1", &["bad dimension `M1`", "NAME=VALUE"]),
    ];
    for (d, needles) in cases {
        let err = fails(&["run", FLAGSHIP, "--target", "ref", "--dims", d]);
        for needle in needles {
            assert!(err.contains(needle), "--dims {d}: `{needle}` not in {err}");
        }
    }
    let err = fails(&["run", FLAGSHIP, "--target", "ref"]);
    assert!(err.contains("--dims") && err.contains("--inputs"), "{err}");
    let err = fails(&[
        "run",
        FLAGSHIP,
        "--target",
        "nope",
        "--dims",
        "M=1,N=8,K=256",
    ]);
    assert!(err.contains("unsupported target `nope`"), "{err}");
}

/// A reader that goes away early (`qkc emit ... | head -1`) ends the output quietly:
/// no panic message about a broken pipe.
#[test]
fn closed_stdout_does_not_panic() {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_qkc"))
        .args(["emit", "examples/kernels/gemv_w3p5.qk", "--target", "ptx"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's read end is dropped here, before the PTX is fully written.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!first.iter().all(|&b| b == 0));
}
