//! `qkc quantize FILE`: quantizes every 2-D float tensor of a `.safetensors`
//! file into a packed layout and writes `NAME.qweight` (U8 `[N, row_bytes]`),
//! `NAME.scales` (F16/F32 `[N, ceil(K/G)]`) and, for unsigned layouts,
//! `NAME.zeros` (U8 `[N, ceil(K/G)]`), then prints a per-tensor quality table
//! against uniform 4-bit and 3-bit quantization at the same group size.
//!
//! The output's `__metadata__` records the layout (`qkc.layout`,
//! `qkc.layout_desc`), `qkc.group`, `qkc.scale_dtype`, `qkc.search`, and each
//! tensor's unpacked K as `NAME.k` (a stream row's byte count does not give K
//! back). Tensors that are not 2-D, or not F32/F16/BF16, are skipped with a
//! note and not copied.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use indicatif::{ProgressBar, ProgressStyle};
use qkc_dsl::layout::{builtin, LayoutDesc, BUILTIN_NAMES};
use qkc_runtime::quantize::{
    error_metrics, quantize, scheme_of, QuantConfig, QuantError, QuantizedTensor, ScaleDtype,
    ScaleSearch,
};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

/// How scales are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScaleDtypeArg {
    F16,
    F32,
}

impl From<ScaleDtypeArg> for ScaleDtype {
    fn from(a: ScaleDtypeArg) -> ScaleDtype {
        match a {
            ScaleDtypeArg::F16 => ScaleDtype::F16,
            ScaleDtypeArg::F32 => ScaleDtype::F32,
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct QuantizeArgs {
    /// The .safetensors file to quantize.
    pub file: PathBuf,
    /// Packed layout: one of s2, s3, s4, u4, s8, q3p5, q3p5b.
    #[arg(long, default_value = "q3p5")]
    pub layout: String,
    /// Weights per scale group along K.
    #[arg(long, default_value_t = 128)]
    pub group: usize,
    /// Output file (default: FILE with `.LAYOUT.safetensors` in place of its extension).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Search each group's clipping ratio for the least squared error instead of absmax.
    #[arg(long)]
    pub mse: bool,
    /// How scales are stored.
    #[arg(long, value_enum, default_value_t = ScaleDtypeArg::F16)]
    pub scale_dtype: ScaleDtypeArg,
}

/// What can go wrong, as diagnostics.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum QuantizeError {
    #[error("unknown layout `{name}`")]
    #[diagnostic(code(qkc::quantize::layout), help("valid layouts: {valid}"))]
    UnknownLayout { name: String, valid: String },
    #[error("the group size must be at least 1")]
    #[diagnostic(code(qkc::quantize::group), help("the default is --group 128"))]
    ZeroGroup,
    #[error("layout `{name}` can't be quantized")]
    #[diagnostic(code(qkc::quantize::layout))]
    Layout {
        name: String,
        #[source]
        source: QuantError,
    },
    #[error("cannot read `{path}`")]
    #[diagnostic(code(qkc::quantize::read))]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not a valid safetensors file")]
    #[diagnostic(code(qkc::quantize::parse))]
    Parse {
        path: String,
        #[source]
        source: SafeTensorError,
    },
    #[error("tensor `{name}` has {got} bytes of data, but {dtype} {shape:?} needs {expected}")]
    #[diagnostic(code(qkc::quantize::parse))]
    DataLen {
        name: String,
        dtype: String,
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error("cannot quantize tensor `{name}`")]
    #[diagnostic(code(qkc::quantize::quantize))]
    Quantize {
        name: String,
        #[source]
        source: QuantError,
    },
    #[error("the output `{path}` would overwrite the input")]
    #[diagnostic(code(qkc::quantize::output), help("pass another path with -o"))]
    OverwritesInput { path: String },
    #[error("cannot write `{path}`")]
    #[diagnostic(code(qkc::quantize::write))]
    Write {
        path: String,
        #[source]
        source: SafeTensorError,
    },
}

/// One line of the report table.
struct Row {
    name: String,
    shape: [usize; 2],
    dtype: Dtype,
    bits_per_weight: f64,
    snr_db: f64,
    rmse: f64,
    snr_s4_db: f64,
    snr_s3_db: f64,
}

/// A tensor to write: name, dtype, shape, little-endian bytes.
type OutTensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// Runs `qkc quantize`.
pub fn run(args: &QuantizeArgs) -> miette::Result<()> {
    let layout = builtin(&args.layout).ok_or_else(|| QuantizeError::UnknownLayout {
        name: args.layout.clone(),
        valid: BUILTIN_NAMES.join(", "),
    })?;
    if args.group == 0 {
        return Err(QuantizeError::ZeroGroup.into());
    }
    scheme_of(&layout).map_err(|source| QuantizeError::Layout {
        name: args.layout.clone(),
        source,
    })?;
    let search = if args.mse {
        ScaleSearch::Mse
    } else {
        ScaleSearch::AbsMax
    };
    let cfg = QuantConfig::new(layout)
        .with_group(args.group)
        .with_scale_dtype(args.scale_dtype.into())
        .with_search(search);
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.file, &args.layout));
    if same_file(&output, &args.file) {
        return Err(QuantizeError::OverwritesInput {
            path: output.display().to_string(),
        }
        .into());
    }

    let bytes = std::fs::read(&args.file).map_err(|source| QuantizeError::Read {
        path: args.file.display().to_string(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|source| QuantizeError::Parse {
        path: args.file.display().to_string(),
        source,
    })?;
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));

    let (todo, skipped): (Vec<_>, Vec<_>) = tensors
        .into_iter()
        .partition(|(_, v)| skip_reason(v).is_none());
    for (name, view) in &skipped {
        if let Some(why) = skip_reason(view) {
            println!("note: skipping `{name}` ({why})");
        }
    }

    let bar = ProgressBar::new(todo.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} quantizing [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut rows = Vec::with_capacity(todo.len());
    let mut out: Vec<OutTensor> = Vec::with_capacity(3 * todo.len());
    let mut metadata = HashMap::new();
    for (name, view) in &todo {
        bar.set_message(name.clone());
        let (row, q) = quantize_tensor(name, view, &cfg)?;
        metadata.insert(format!("{name}.k"), q.k.to_string());
        out.extend(tensor_outputs(name, q));
        rows.push(row);
        bar.inc(1);
    }
    bar.finish_and_clear();

    metadata.insert("qkc.layout".into(), args.layout.clone());
    metadata.insert("qkc.layout_desc".into(), layout.describe());
    metadata.insert("qkc.group".into(), args.group.to_string());
    metadata.insert("qkc.scale_dtype".into(), cfg.scale_dtype.name().to_string());
    metadata.insert(
        "qkc.search".into(),
        if args.mse { "mse" } else { "absmax" }.to_string(),
    );
    write_output(&output, &out, metadata)?;

    print_table(&rows, &args.layout, &cfg);
    let written: usize = out.iter().map(|t| t.3.len()).sum();
    println!(
        "wrote {} tensors ({written} bytes of data) to {}",
        out.len(),
        output.display()
    );
    Ok(())
}

/// `dir/model.safetensors` → `dir/model.q3p5.safetensors`.
fn default_output(input: &Path, layout: &str) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "weights".to_string());
    input.with_file_name(format!("{stem}.{layout}.safetensors"))
}

/// Whether two paths name the same file (textually, or once both exist).
fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Why a tensor is not quantized, if it is not.
fn skip_reason(view: &TensorView<'_>) -> Option<String> {
    if !matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
        return Some(format!("dtype {} is not F32, F16 or BF16", view.dtype()));
    }
    if view.shape().len() != 2 {
        return Some(format!("shape {:?} is not 2-D", view.shape()));
    }
    None
}

/// The tensor's elements as f32.
fn to_f32(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>, QuantizeError> {
    let data = view.data();
    let count: usize = view.shape().iter().product();
    let (size, values): (usize, Vec<f32>) = match view.dtype() {
        Dtype::F32 => (
            4,
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::F16 => (
            2,
            data.chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        _ => (
            2,
            data.chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
    };
    if values.len() != count || data.len() != count * size {
        return Err(QuantizeError::DataLen {
            name: name.to_string(),
            dtype: view.dtype().to_string(),
            shape: view.shape().to_vec(),
            expected: count * size,
            got: data.len(),
        });
    }
    Ok(values)
}

/// Quantizes one tensor, plus s4 and s3 at the same settings for comparison.
fn quantize_tensor(
    name: &str,
    view: &TensorView<'_>,
    cfg: &QuantConfig,
) -> Result<(Row, QuantizedTensor), QuantizeError> {
    let (n, k) = (view.shape()[0], view.shape()[1]);
    let w = to_f32(name, view)?;
    let err = |source| QuantizeError::Quantize {
        name: name.to_string(),
        source,
    };
    let snr = |layout: LayoutDesc| -> Result<(f64, f64, QuantizedTensor), QuantError> {
        let q = quantize(&w, n, k, &QuantConfig { layout, ..*cfg })?;
        let m = error_metrics(&w, &q.dequantize()?)?;
        Ok((m.snr_db, m.rmse, q))
    };
    let (snr_db, rmse, q) = snr(cfg.layout).map_err(err)?;
    let comparison = |name: &str| builtin(name).map(|l| snr(l).map(|r| r.0)).transpose();
    let snr_s4_db = comparison("s4").map_err(err)?.unwrap_or(f64::NAN);
    let snr_s3_db = comparison("s3").map_err(err)?.unwrap_or(f64::NAN);
    let row = Row {
        name: name.to_string(),
        shape: [n, k],
        dtype: view.dtype(),
        bits_per_weight: q.bits_per_weight(),
        snr_db,
        rmse,
        snr_s4_db,
        snr_s3_db,
    };
    Ok((row, q))
}

/// `NAME.qweight`, `NAME.scales` and maybe `NAME.zeros`.
fn tensor_outputs(name: &str, q: QuantizedTensor) -> Vec<OutTensor> {
    let groups = q.groups_per_row();
    let row_bytes = q.layout.row_bytes(q.k);
    let scale_dtype = match q.scales.dtype() {
        ScaleDtype::F16 => Dtype::F16,
        ScaleDtype::F32 => Dtype::F32,
    };
    let mut out = vec![
        (
            format!("{name}.qweight"),
            Dtype::U8,
            vec![q.n, row_bytes],
            q.codes_packed,
        ),
        (
            format!("{name}.scales"),
            scale_dtype,
            vec![q.n, groups],
            q.scales.to_le_bytes(),
        ),
    ];
    if let Some(z) = q.zeros {
        out.push((format!("{name}.zeros"), Dtype::U8, vec![q.n, groups], z));
    }
    out
}

fn write_output(
    path: &Path,
    tensors: &[OutTensor],
    metadata: HashMap<String, String>,
) -> Result<(), QuantizeError> {
    let write_err = |source| QuantizeError::Write {
        path: path.display().to_string(),
        source,
    };
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data).map(|v| (name.as_str(), v))
        })
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map_err(write_err)?;
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(write_err)
}

fn print_table(rows: &[Row], layout_name: &str, cfg: &QuantConfig) {
    if rows.is_empty() {
        println!("note: no 2-D F32/F16/BF16 tensor to quantize");
        return;
    }
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(6);
    let shape_w = rows
        .iter()
        .map(|r| format!("{:?}", r.shape).len())
        .max()
        .unwrap_or(0)
        .max(5);
    let snr_head = format!("{layout_name} SNR");
    println!(
        "{:<name_w$}  {:<shape_w$}  {:>5}  {:>7}  {:>9}  {:>10}  {:>7}  {:>7}",
        "tensor", "shape", "dtype", "bits/w", snr_head, "RMSE", "s4 SNR", "s3 SNR"
    );
    for r in rows {
        println!(
            "{:<name_w$}  {:<shape_w$}  {:>5}  {:>7.3}  {:>9.2}  {:>10.3e}  {:>7.2}  {:>7.2}",
            r.name,
            format!("{:?}", r.shape),
            r.dtype.to_string(),
            r.bits_per_weight,
            r.snr_db,
            r.rmse,
            r.snr_s4_db,
            r.snr_s3_db,
        );
    }
    let (bits, weights) = rows.iter().fold((0f64, 0usize), |(b, w), r| {
        let n = r.shape[0] * r.shape[1];
        (b + r.bits_per_weight * n as f64, w + n)
    });
    let search = match cfg.search {
        ScaleSearch::AbsMax => "absmax",
        ScaleSearch::Mse => "mse",
    };
    println!(
        "{weights} weights at {:.3} bits/weight overall (codes + {} scales{}), group {}, {search}; \
         SNR in dB, s4/s3 = uniform 4-/3-bit at the same group",
        if weights == 0 { 0.0 } else { bits / weights as f64 },
        cfg.scale_dtype.name(),
        zero_note(&cfg.layout),
        cfg.group
    );
}

fn zero_note(layout: &LayoutDesc) -> &'static str {
    if layout.fields().iter().all(|f| !f.signed) {
        " + u8 zero points"
    } else {
        ""
    }
}
