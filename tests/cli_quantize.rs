//! End-to-end test of `qkc quantize`: writes a small safetensors file, runs the
//! built binary on it and checks the output tensors, their byte lengths, the
//! dequantized values, and the diagnostics for bad arguments.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use half::{bf16, f16};
use qkc::layout::{builtin, LayoutDesc, Q3P5_STREAM};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "qkc-cli-quantize-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic, non-zero, sign-changing weights.
fn weights(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0;
            x * (1.0 + (i % 5) as f32) * 0.03
        })
        .collect()
}

/// The input file and its float tensors (as f32, after dtype rounding).
fn write_input(path: &Path) -> HashMap<String, (usize, usize, Vec<f32>)> {
    let w = weights(6 * 301, 1);
    let h: Vec<f16> = weights(4 * 64, 2).into_iter().map(f16::from_f32).collect();
    let b: Vec<bf16> = weights(3 * 130, 3)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    let bias = weights(8, 4);
    let ids: Vec<i32> = vec![1, -2, 3, 4];

    let w_bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    let h_bytes: Vec<u8> = h.iter().flat_map(|x| x.to_le_bytes()).collect();
    let b_bytes: Vec<u8> = b.iter().flat_map(|x| x.to_le_bytes()).collect();
    let bias_bytes: Vec<u8> = bias.iter().flat_map(|x| x.to_le_bytes()).collect();
    let ids_bytes: Vec<u8> = ids.iter().flat_map(|x| x.to_le_bytes()).collect();
    let views = vec![
        (
            "layer.w",
            TensorView::new(Dtype::F32, vec![6, 301], &w_bytes).unwrap(),
        ),
        (
            "layer.h",
            TensorView::new(Dtype::F16, vec![4, 64], &h_bytes).unwrap(),
        ),
        (
            "layer.b",
            TensorView::new(Dtype::BF16, vec![3, 130], &b_bytes).unwrap(),
        ),
        (
            "bias",
            TensorView::new(Dtype::F32, vec![8], &bias_bytes).unwrap(),
        ),
        (
            "ids",
            TensorView::new(Dtype::I32, vec![2, 2], &ids_bytes).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, None, path).unwrap();

    let mut m = HashMap::new();
    m.insert("layer.w".to_string(), (6, 301, w));
    m.insert(
        "layer.h".to_string(),
        (4, 64, h.iter().map(|x| x.to_f32()).collect()),
    );
    m.insert(
        "layer.b".to_string(),
        (3, 130, b.iter().map(|x| x.to_f32()).collect()),
    );
    m
}

fn qkc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qkc"))
        .arg("quantize")
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn f32s(v: &TensorView<'_>) -> Vec<f32> {
    match v.dtype() {
        Dtype::F32 => v
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => v
            .data()
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => panic!("scales as {other}"),
    }
}

/// Checks one quantized tensor of the output: shapes, byte lengths, and that
/// every weight dequantizes within half a step of the input.
fn check_tensor(
    st: &SafeTensors<'_>,
    name: &str,
    (n, k, w): &(usize, usize, Vec<f32>),
    layout: LayoutDesc,
    group: usize,
    scale_dtype: Dtype,
    zeros: bool,
) {
    let groups = k.div_ceil(group);
    let qw = st.tensor(&format!("{name}.qweight")).unwrap();
    assert_eq!(qw.dtype(), Dtype::U8);
    assert_eq!(qw.shape(), [*n, layout.row_bytes(*k)]);
    assert_eq!(qw.data().len(), n * layout.row_bytes(*k));
    let sc = st.tensor(&format!("{name}.scales")).unwrap();
    assert_eq!(sc.dtype(), scale_dtype);
    assert_eq!(sc.shape(), [*n, groups]);
    let bytes = if scale_dtype == Dtype::F16 { 2 } else { 4 };
    assert_eq!(sc.data().len(), n * groups * bytes);
    let scales = f32s(&sc);
    let zp: Option<Vec<u8>> = if zeros {
        let z = st.tensor(&format!("{name}.zeros")).unwrap();
        assert_eq!(z.dtype(), Dtype::U8);
        assert_eq!(z.shape(), [*n, groups]);
        Some(z.data().to_vec())
    } else {
        assert!(st.tensor(&format!("{name}.zeros")).is_err());
        None
    };
    let codes = layout.unpack(qw.data(), *n, *k);
    let mut nonzero = 0;
    for (i, (&c, &x)) in codes.iter().zip(w).enumerate() {
        let g = (i / k) * groups + (i % k) / group;
        let z = zp.as_ref().map_or(0, |z| z[g] as i32);
        let d = (c - z) as f32 * scales[g];
        assert!(
            (x - d).abs() <= scales[g] * 0.5 * (1.0 + 1e-5),
            "{name}[{i}]: {x} -> {d} (scale {})",
            scales[g]
        );
        nonzero += (c != z) as usize;
    }
    assert!(
        nonzero > w.len() / 2,
        "{name}: most codes should be non-zero"
    );
}

#[test]
fn quantize_q3p5_writes_packed_codes_and_f16_scales() {
    let dir = TempDir::new("q3p5");
    let input = dir.path("model.safetensors");
    let output = dir.path("model.q.safetensors");
    let tensors = write_input(&input);

    let out = qkc(&[
        input.to_str().unwrap(),
        "--layout",
        "q3p5",
        "--group",
        "128",
        "-o",
        output.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in ["layer.w", "layer.h", "layer.b"] {
        assert!(stdout.contains(name), "{}", text(&out));
    }
    assert!(stdout.contains("skipping `bias`"), "{}", text(&out));
    assert!(stdout.contains("skipping `ids`"), "{}", text(&out));
    assert!(stdout.contains("s4 SNR") && stdout.contains("s3 SNR"));

    let bytes = std::fs::read(&output).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        [
            "layer.b.qweight",
            "layer.b.scales",
            "layer.h.qweight",
            "layer.h.scales",
            "layer.w.qweight",
            "layer.w.scales",
        ]
    );
    // K = 301 (odd, 3 groups, the last one partial): 151 units of 7 bits.
    assert_eq!(st.tensor("layer.w.qweight").unwrap().shape(), [6, 133]);
    assert_eq!(st.tensor("layer.w.scales").unwrap().shape(), [6, 3]);
    assert_eq!(st.tensor("layer.h.qweight").unwrap().shape(), [4, 28]);
    assert_eq!(st.tensor("layer.b.qweight").unwrap().shape(), [3, 57]);
    for (name, t) in &tensors {
        check_tensor(&st, name, t, Q3P5_STREAM, 128, Dtype::F16, false);
    }
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["qkc.layout"], "q3p5");
    assert_eq!(meta["qkc.group"], "128");
    assert_eq!(meta["layer.w.k"], "301");
}

#[test]
fn quantize_u4_mse_writes_zero_points_and_f32_scales() {
    let dir = TempDir::new("u4");
    let input = dir.path("model.safetensors");
    let tensors = write_input(&input);

    // No -o: the output goes next to the input.
    let out = qkc(&[
        input.to_str().unwrap(),
        "--layout",
        "u4",
        "--group",
        "32",
        "--mse",
        "--scale-dtype",
        "f32",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let output = dir.path("model.u4.safetensors");
    let bytes = std::fs::read(&output).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 9);
    let u4 = builtin("u4").unwrap();
    for (name, (n, k, w)) in &tensors {
        let groups = k.div_ceil(32);
        let qw = st.tensor(&format!("{name}.qweight")).unwrap();
        assert_eq!(qw.shape(), [*n, k.div_ceil(2)]);
        let z = st.tensor(&format!("{name}.zeros")).unwrap();
        assert_eq!(z.shape(), [*n, groups]);
        // MSE may clip, so only the error in the RMS sense is bounded here.
        let sc = f32s(&st.tensor(&format!("{name}.scales")).unwrap());
        let codes = u4.unpack(qw.data(), *n, *k);
        let zs = z.data();
        let err: f32 = codes
            .iter()
            .zip(w)
            .enumerate()
            .map(|(i, (&c, &x))| {
                let g = (i / k) * groups + (i % k) / 32;
                let d = (c - zs[g] as i32) as f32 * sc[g];
                (x - d) * (x - d)
            })
            .sum();
        let signal: f32 = w.iter().map(|x| x * x).sum();
        assert!(err < signal / 100.0, "{name}: SNR below 20 dB");
    }
}

#[test]
fn bad_arguments_are_diagnostics_not_panics() {
    let dir = TempDir::new("errors");
    let input = dir.path("model.safetensors");
    write_input(&input);
    let input = input.to_str().unwrap();

    let out = qkc(&[input, "--layout", "q9"]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("q9"), "{}", text(&out));
    for valid in ["s2", "s3", "s4", "u4", "s8", "q3p5", "q3p5b"] {
        assert!(err.contains(valid), "{}", text(&out));
    }

    let out = qkc(&[input, "--group", "0"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("group"));

    let missing = dir.path("missing.safetensors");
    let out = qkc(&[missing.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.safetensors"));

    let junk = dir.path("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file").unwrap();
    let out = qkc(&[junk.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));

    let out = qkc(&[input, "-o", input]);
    assert!(!out.status.success(), "{}", text(&out));

    for out in [
        qkc(&[input, "--layout", "q9"]),
        qkc(&[input, "--group", "0"]),
    ] {
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
}
