//! `.npz` archives as numpy and the ADM evaluator (openai/guided-diffusion
//! `evaluations/evaluator.py`) read and write them.
//!
//! * [`NpzReader`]: zip members stored or deflated, `.npy` headers v1/v2/v3,
//!   little-endian `f32`/`f64`/`u8`/`i64`, C order. Fortran order, big-endian and other
//!   dtypes are refused with an error naming the file and the key. Large members (the
//!   50K-image `arr_0`) are read in batches of rows with [`NpzReader::for_each_rows`].
//! * [`read_stats`] / [`write_stats`]: Fréchet statistics under the ADM reference-batch
//!   keys `mu`, `sigma` (pool3) and `mu_s`, `sigma_s` (spatial, for sFID). ditbench also
//!   writes `n` and `n_s` (sample counts), which the ADM evaluator ignores.
//! * [`SampleArchiveWriter`]: a sample archive in the ADM format (uint8 `arr_0`,
//!   N×H×W×3, optional int64 labels `arr_1`), written as chunks that survive a crash and
//!   are resumed, then streamed once into the final `.npz` by [`SampleArchiveWriter::finish`].

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::stats::FeatureStats;
use crate::EvalError;

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy aligns the data after the header to 64 bytes (`ARRAY_ALIGN`).
const ARRAY_ALIGN: usize = 64;
/// numpy leaves room to grow the first axis in place (`GROWTH_AXIS_MAX_DIGITS`).
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
const VALID_DTYPES: &str = "little-endian '<f4', '<f8', '|u1', '<i8'";

/// Element types ditbench reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    U8,
    I64,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::U8 => 1,
        }
    }
    /// The `descr` numpy writes for this type.
    pub fn descr(self) -> &'static str {
        match self {
            DType::F32 => "<f4",
            DType::F64 => "<f8",
            DType::U8 => "|u1",
            DType::I64 => "<i8",
        }
    }
}

/// A parsed `.npy` header (always C order: Fortran order is refused while parsing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl NpyHeader {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Array data, little-endian decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    U8(Vec<u8>),
    I64(Vec<i64>),
}

/// One array of an archive.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

impl NpyArray {
    pub fn dtype(&self) -> DType {
        match self.data {
            NpyData::F32(_) => DType::F32,
            NpyData::F64(_) => DType::F64,
            NpyData::U8(_) => DType::U8,
            NpyData::I64(_) => DType::I64,
        }
    }
    fn len(&self) -> usize {
        match &self.data {
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
            NpyData::U8(v) => v.len(),
            NpyData::I64(v) => v.len(),
        }
    }
    /// Floats widened to f64 (exact for f32); integers are refused.
    pub fn to_f64(&self, what: &str) -> Result<Vec<f64>, EvalError> {
        match &self.data {
            NpyData::F64(v) => Ok(v.clone()),
            NpyData::F32(v) => Ok(v.iter().map(|&x| f64::from(x)).collect()),
            _ => Err(bad(
                what,
                format!("dtype {} where a float array ('<f4' or '<f8') is expected", self.dtype().descr()),
            )),
        }
    }
    /// The array as a CPU tensor of its own dtype.
    pub fn to_tensor(&self) -> Tensor {
        let shape: Vec<i64> = self.shape.iter().map(|&s| s as i64).collect();
        let t = match &self.data {
            NpyData::F32(v) => Tensor::from_slice(v.as_slice()),
            NpyData::F64(v) => Tensor::from_slice(v.as_slice()),
            NpyData::U8(v) => Tensor::from_slice(v.as_slice()),
            NpyData::I64(v) => Tensor::from_slice(v.as_slice()),
        };
        t.reshape(shape.as_slice())
    }
    /// A CPU tensor as an array (f32, f64, u8, i64; other kinds are refused).
    pub fn from_tensor(t: &Tensor, what: &str) -> Result<Self, EvalError> {
        let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
        let flat = t.f_to(tch::Device::Cpu)?.f_contiguous()?.f_reshape([-1])?;
        let data = match t.kind() {
            Kind::Float => NpyData::F32(Vec::<f32>::try_from(&flat)?),
            Kind::Double => NpyData::F64(Vec::<f64>::try_from(&flat)?),
            Kind::Uint8 => NpyData::U8(Vec::<u8>::try_from(&flat)?),
            Kind::Int64 => NpyData::I64(Vec::<i64>::try_from(&flat)?),
            k => return Err(bad(what, format!("tensor kind {k:?}; valid: Float, Double, Uint8, Int64"))),
        };
        Ok(NpyArray { shape, data })
    }
}

fn bad(what: impl Into<String>, problem: impl Into<String>) -> EvalError {
    EvalError::BadInput { what: what.into(), problem: problem.into() }
}

fn io_err(path: &Path, source: std::io::Error) -> EvalError {
    EvalError::Io { path: path.display().to_string(), source }
}

fn zip_err(path: &Path, e: zip::result::ZipError) -> EvalError {
    bad(path.display().to_string(), format!("not a readable zip/npz archive: {e}"))
}

// ------------------------------------------------------------------ .npy headers

/// Reads the magic, version and header dict of a `.npy` stream. `what` names the member
/// (`file.npz:key`) in errors.
pub fn read_npy_header(r: &mut impl Read, what: &str) -> Result<NpyHeader, EvalError> {
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre).map_err(|e| bad(what, format!("truncated .npy header: {e}")))?;
    if &pre[..6] != MAGIC {
        return Err(bad(what, "not a .npy array (magic \\x93NUMPY missing)"));
    }
    let hlen = match pre[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|e| bad(what, format!("truncated .npy header: {e}")))?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|e| bad(what, format!("truncated .npy header: {e}")))?;
            u32::from_le_bytes(b) as usize
        }
        v => return Err(bad(what, format!(".npy format version {v}.{}; valid: 1.0, 2.0, 3.0", pre[7]))),
    };
    let mut text = vec![0u8; hlen];
    r.read_exact(&mut text).map_err(|e| bad(what, format!("truncated .npy header: {e}")))?;
    // v1/v2 headers are latin-1 and v3 UTF-8; the keys and values we accept are ASCII.
    let text = String::from_utf8_lossy(&text);
    parse_header_dict(&text, what)
}

fn dict_value<'a>(text: &'a str, key: &str, what: &str) -> Result<&'a str, EvalError> {
    let pat = format!("'{key}':");
    let at = text
        .find(&pat)
        .ok_or_else(|| bad(what, format!("malformed .npy header (no '{key}'): {text}")))?;
    Ok(text[at + pat.len()..].trim_start())
}

fn parse_header_dict(text: &str, what: &str) -> Result<NpyHeader, EvalError> {
    let descr = dict_value(text, "descr", what)?;
    let quote = descr.chars().next().unwrap_or(' ');
    if quote != '\'' && quote != '"' {
        return Err(bad(what, format!("structured dtype {descr:.40}…; valid: {VALID_DTYPES}")));
    }
    let descr = &descr[1..descr[1..].find(quote).map(|i| i + 1).unwrap_or(descr.len())];
    let dtype = match descr {
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        "|u1" | "<u1" | ">u1" | "=u1" => DType::U8,
        "<i8" => DType::I64,
        d if d.starts_with('>') => {
            return Err(bad(what, format!("big-endian dtype '{d}'; valid: {VALID_DTYPES}")))
        }
        d => return Err(bad(what, format!("dtype '{d}'; valid: {VALID_DTYPES}"))),
    };
    let fortran = dict_value(text, "fortran_order", what)?;
    if fortran.starts_with("True") {
        return Err(bad(
            what,
            "Fortran-order array; valid: C order (save np.ascontiguousarray(x))",
        ));
    } else if !fortran.starts_with("False") {
        return Err(bad(what, format!("malformed fortran_order in .npy header: {text}")));
    }
    let shape = dict_value(text, "shape", what)?;
    let close = shape
        .find(')')
        .filter(|_| shape.starts_with('('))
        .ok_or_else(|| bad(what, format!("malformed shape in .npy header: {text}")))?;
    let shape = shape[1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(what, format!("malformed shape in .npy header: {text}")))?;
    Ok(NpyHeader { dtype, shape })
}

/// The header numpy's `np.save` writes (version 1.0 unless it needs more than 65535
/// bytes), byte for byte: sorted dict, growth padding, spaces to a multiple of 64, `\n`.
pub fn npy_header_bytes(dtype: DType, shape: &[usize]) -> Vec<u8> {
    let shape_repr = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        s => format!("({})", s.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_repr}, }}",
        dtype.descr()
    );
    if let Some(first) = shape.first() {
        dict.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(first.to_string().len())));
    }
    for (version, len_bytes) in [(1u8, 2usize), (2, 4)] {
        let unpadded = MAGIC.len() + 2 + len_bytes + dict.len() + 1;
        let pad = (ARRAY_ALIGN - unpadded % ARRAY_ALIGN) % ARRAY_ALIGN;
        let hlen = dict.len() + pad + 1;
        if version == 1 && hlen > u16::MAX as usize {
            continue;
        }
        let mut out = Vec::with_capacity(unpadded + pad);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(hlen as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(hlen as u32).to_le_bytes());
        }
        out.extend_from_slice(dict.as_bytes());
        out.extend(std::iter::repeat_n(b' ', pad));
        out.push(b'\n');
        return out;
    }
    unreachable!("a version 2.0 header holds 4 GiB")
}

fn decode(dtype: DType, bytes: &[u8]) -> NpyData {
    match dtype {
        DType::U8 => NpyData::U8(bytes.to_vec()),
        DType::F32 => NpyData::F32(
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        ),
        DType::F64 => NpyData::F64(
            bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        ),
        DType::I64 => NpyData::I64(
            bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
        ),
    }
}

fn encode_into(data: &NpyData, out: &mut Vec<u8>) {
    match data {
        NpyData::U8(v) => out.extend_from_slice(v),
        NpyData::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
}

/// A whole `.npy` file (header + data) as numpy writes it.
pub fn npy_bytes(array: &NpyArray) -> Vec<u8> {
    let mut out = npy_header_bytes(array.dtype(), &array.shape);
    encode_into(&array.data, &mut out);
    out
}

// ------------------------------------------------------------------ reading

/// An open `.npz` archive.
pub struct NpzReader {
    path: PathBuf,
    zip: ZipArchive<BufReader<File>>,
}

impl std::fmt::Debug for NpzReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpzReader").field("path", &self.path).finish()
    }
}

impl NpzReader {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, EvalError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| io_err(&path, e))?;
        let zip = ZipArchive::new(BufReader::new(file)).map_err(|e| zip_err(&path, e))?;
        Ok(NpzReader { path, zip })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Array names (member names without `.npy`), in archive order.
    pub fn keys(&self) -> Vec<String> {
        self.zip
            .file_names()
            .filter_map(|n| n.ok())
            .map(|n| n.strip_suffix(".npy").unwrap_or(&n).to_string())
            .collect()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.keys().iter().any(|k| k == key)
    }

    fn what(&self, key: &str) -> String {
        format!("{}:{key}", self.path.display())
    }

    fn member(&mut self, key: &str) -> Result<zip::read::ZipFile<'_, BufReader<File>>, EvalError> {
        let keys = self.keys();
        let what = self.what(key);
        self.zip
            .by_name(&format!("{key}.npy"))
            .map_err(|_| bad(what, format!("no array '{key}' in the archive; it has {keys:?}")))
    }

    /// The header of `key`, without reading its data.
    pub fn header(&mut self, key: &str) -> Result<NpyHeader, EvalError> {
        let what = self.what(key);
        let mut m = self.member(key)?;
        read_npy_header(&mut m, &what)
    }

    /// Reads `key` whole.
    pub fn read(&mut self, key: &str) -> Result<NpyArray, EvalError> {
        let what = self.what(key);
        let mut m = self.member(key)?;
        let h = read_npy_header(&mut m, &what)?;
        let nbytes = h.numel() * h.dtype.size();
        let mut bytes = vec![0u8; nbytes];
        m.read_exact(&mut bytes)
            .map_err(|e| bad(&what, format!("data truncated: expected {nbytes} bytes for shape {:?}: {e}", h.shape)))?;
        Ok(NpyArray { shape: h.shape, data: decode(h.dtype, &bytes) })
    }

    /// Reads a float array of `key` widened to f64, checking its shape against
    /// `expected` (`None` entries match any length).
    pub fn read_f64(&mut self, key: &str, expected: &[Option<usize>]) -> Result<(Vec<usize>, Vec<f64>), EvalError> {
        let what = self.what(key);
        let a = self.read(key)?;
        let ok = a.shape.len() == expected.len()
            && a.shape.iter().zip(expected).all(|(s, e)| e.is_none_or(|e| e == *s));
        if !ok {
            let exp: Vec<String> = expected.iter().map(|e| e.map_or("any".into(), |e| e.to_string())).collect();
            return Err(bad(what, format!("shape {:?}; expected [{}]", a.shape, exp.join(", "))));
        }
        let v = a.to_f64(&what)?;
        Ok((a.shape, v))
    }

    /// Streams `key` in batches of up to `rows` rows along axis 0 (the way the ADM
    /// evaluator streams `arr_0`), so a 50K-image archive never sits in memory whole.
    pub fn for_each_rows(
        &mut self,
        key: &str,
        rows: usize,
        mut f: impl FnMut(&NpyArray) -> Result<(), EvalError>,
    ) -> Result<NpyHeader, EvalError> {
        let what = self.what(key);
        if rows == 0 {
            return Err(bad(&what, "batch of 0 rows; valid: at least 1"));
        }
        let mut m = self.member(key)?;
        let h = read_npy_header(&mut m, &what)?;
        let Some(&n) = h.shape.first() else {
            return Err(bad(&what, "a 0-d array has no rows; expected at least 1 dimension"));
        };
        let row_elems: usize = h.shape[1..].iter().product();
        let mut done = 0;
        let mut buf = Vec::new();
        while done < n {
            let b = rows.min(n - done);
            buf.resize(b * row_elems * h.dtype.size(), 0);
            m.read_exact(&mut buf).map_err(|e| {
                bad(&what, format!("data truncated after row {done} of {n} (shape {:?}): {e}", h.shape))
            })?;
            let mut shape = h.shape.clone();
            shape[0] = b;
            f(&NpyArray { shape, data: decode(h.dtype, &buf) })?;
            done += b;
        }
        Ok(h)
    }
}

// ------------------------------------------------------------------ writing

/// Writes arrays as one `.npz` (stored like `np.savez`, or deflated like
/// `np.savez_compressed`), through a temporary file renamed into place.
pub fn write_npz(path: impl AsRef<Path>, arrays: &[(&str, &NpyArray)], compressed: bool) -> Result<(), EvalError> {
    let path = path.as_ref();
    let method = if compressed { CompressionMethod::Deflated } else { CompressionMethod::Stored };
    atomic_zip(path, |zw| {
        for (key, a) in arrays {
            if a.len() != a.shape.iter().product::<usize>() {
                return Err(bad(format!("{}:{key}", path.display()), format!("{} elements for shape {:?}", a.len(), a.shape)));
            }
            let bytes = npy_bytes(a);
            let opts = SimpleFileOptions::default()
                .compression_method(method)
                .large_file(bytes.len() as u64 >= u32::MAX as u64);
            zw.start_file(format!("{key}.npy"), opts).map_err(|e| zip_err(path, e))?;
            zw.write_all(&bytes).map_err(|e| io_err(path, e))?;
        }
        Ok(())
    })
}

fn atomic_zip(
    path: &Path,
    body: impl FnOnce(&mut ZipWriter<BufWriter<File>>) -> Result<(), EvalError>,
) -> Result<(), EvalError> {
    let tmp = tmp_path(path);
    let file = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    let mut zw = ZipWriter::new(BufWriter::new(file));
    let result = body(&mut zw).and_then(|()| {
        let w = zw.finish().map_err(|e| zip_err(path, e))?;
        let f = w.into_inner().map_err(|e| io_err(&tmp, e.into_error()))?;
        f.sync_all().map_err(|e| io_err(&tmp, e))
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

// ------------------------------------------------------------------ statistics

/// Which statistics of an ADM reference batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsKind {
    /// pool3 features (FID): keys `mu`, `sigma`.
    Pool,
    /// first 7 channels of mixed_6/conv (sFID): keys `mu_s`, `sigma_s`.
    Spatial,
}

impl StatsKind {
    pub fn keys(self) -> (&'static str, &'static str, &'static str) {
        match self {
            StatsKind::Pool => ("mu", "sigma", "n"),
            StatsKind::Spatial => ("mu_s", "sigma_s", "n_s"),
        }
    }
}

/// Reads `mu`/`sigma` (or `mu_s`/`sigma_s`) from an ADM reference batch or a ditbench
/// statistics file. `n` is the stored sample count, or 0 where the file has none (ADM's).
pub fn read_stats(path: impl AsRef<Path>, kind: StatsKind) -> Result<FeatureStats, EvalError> {
    let mut r = NpzReader::open(path)?;
    let (kmu, ksigma, kn) = kind.keys();
    if !r.contains(kmu) || !r.contains(ksigma) {
        return Err(bad(
            r.path().display().to_string(),
            format!("no '{kmu}' and '{ksigma}' arrays ({kind:?} statistics); the archive has {:?}", r.keys()),
        ));
    }
    let (_, mu) = r.read_f64(kmu, &[None])?;
    let d = mu.len();
    let (_, sigma) = r.read_f64(ksigma, &[Some(d), Some(d)])?;
    let n = if r.contains(kn) {
        match r.read(kn)?.data {
            NpyData::I64(v) if v.len() == 1 && v[0] >= 0 => v[0] as u64,
            _ => return Err(bad(r.what(kn), "expected one non-negative int64 (the sample count)")),
        }
    } else {
        0
    };
    let stats = FeatureStats { n, mu, sigma };
    stats.validate(&r.what(ksigma))?;
    Ok(stats)
}

/// Writes statistics under the ADM keys (`mu`, `sigma`, and `mu_s`, `sigma_s` when
/// `spatial` is given), plus the counts `n`/`n_s`; the ADM evaluator reads it as a
/// reference batch (without `arr_0`, so without precision/recall).
pub fn write_stats(path: impl AsRef<Path>, pool: &FeatureStats, spatial: Option<&FeatureStats>) -> Result<(), EvalError> {
    let path = path.as_ref();
    let mut owned = Vec::new();
    for (s, kind) in std::iter::once((pool, StatsKind::Pool)).chain(spatial.map(|s| (s, StatsKind::Spatial))) {
        s.validate(&format!("{} ({kind:?} statistics)", path.display()))?;
        let d = s.dim();
        let (kmu, ksigma, kn) = kind.keys();
        owned.push((kmu, NpyArray { shape: vec![d], data: NpyData::F64(s.mu.clone()) }));
        owned.push((ksigma, NpyArray { shape: vec![d, d], data: NpyData::F64(s.sigma.clone()) }));
        owned.push((kn, NpyArray { shape: vec![], data: NpyData::I64(vec![s.n as i64]) }));
    }
    let refs: Vec<(&str, &NpyArray)> = owned.iter().map(|(k, a)| (*k, a)).collect();
    write_npz(path, &refs, false)
}

// ------------------------------------------------------------------ sample archives

/// Writes an ADM sample archive (`arr_0`: uint8 N×H×W×3, optional `arr_1`: int64 N)
/// in resumable chunks.
///
/// Each [`append`](Self::append) writes `<path>.parts/chunk-NNNNNN.npy` (and
/// `.labels.npy`) through a temporary file and a rename, so a killed sampler loses at
/// most the chunk it was writing; [`open`](Self::open) on the same path resumes after the
/// last complete chunk ([`len`](Self::len) says how many images are there).
/// [`finish`](Self::finish) streams the chunks into a stored (uncompressed) `<path>`,
/// then deletes the parts folder. Stored, because images barely deflate and numpy/ADM
/// read stored members fastest.
#[derive(Debug)]
pub struct SampleArchiveWriter {
    path: PathBuf,
    parts: PathBuf,
    height: usize,
    width: usize,
    labels: bool,
    chunks: usize,
    n: usize,
}

impl SampleArchiveWriter {
    pub fn open(path: impl AsRef<Path>, height: usize, width: usize, labels: bool) -> Result<Self, EvalError> {
        let path = path.as_ref().to_path_buf();
        if height == 0 || width == 0 {
            return Err(bad(path.display().to_string(), format!("image size {height}×{width}; valid: ≥ 1×1")));
        }
        let mut parts = path.clone().into_os_string();
        parts.push(".parts");
        let parts = PathBuf::from(parts);
        fs::create_dir_all(&parts).map_err(|e| io_err(&parts, e))?;
        let mut w = SampleArchiveWriter { path, parts, height, width, labels, chunks: 0, n: 0 };
        // Resume: count complete chunks in order; a gap or a torn write ends the archive.
        loop {
            let img = w.chunk_path(w.chunks, false);
            if !img.exists() {
                break;
            }
            let what = img.display().to_string();
            let mut f = BufReader::new(File::open(&img).map_err(|e| io_err(&img, e))?);
            let h = read_npy_header(&mut f, &what)?;
            if h.dtype != DType::U8 || h.shape.len() != 4 || h.shape[1..] != [height, width, 3] {
                return Err(bad(what, format!(
                    "chunk is {:?} {:?}; this archive expects uint8 N×{height}×{width}×3 (remove {} to start over)",
                    h.dtype, h.shape, w.parts.display()
                )));
            }
            let lab = w.chunk_path(w.chunks, true);
            if labels != lab.exists() {
                return Err(bad(what, format!(
                    "labels {} for this chunk, but the writer was opened with labels = {labels}",
                    if lab.exists() { "present" } else { "missing" }
                )));
            }
            w.n += h.shape[0];
            w.chunks += 1;
        }
        Ok(w)
    }

    /// Images already in the archive (after a resume: where sampling continues).
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn chunk_path(&self, i: usize, labels: bool) -> PathBuf {
        self.parts.join(format!("chunk-{i:06}{}.npy", if labels { ".labels" } else { "" }))
    }

    /// Appends N images (`images`: N·H·W·3 bytes, NHWC) and, when the archive has labels,
    /// N class labels.
    pub fn append(&mut self, images: &[u8], labels: Option<&[i64]>) -> Result<(), EvalError> {
        let n = self.put_chunk(self.chunks, images, labels)?;
        self.chunks += 1;
        self.n += n;
        Ok(())
    }

    /// Whether chunk `i` is complete on disk.
    pub fn has_chunk(&self, i: usize) -> bool {
        self.chunk_path(i, false).exists()
    }

    /// Writes chunk `i` directly (not after the last one): how several processes fill one
    /// archive, each its own chunks. This writer's count does not change; reopening the
    /// archive counts every chunk that is there, in order, up to the first gap. Returns
    /// the number of images written.
    pub fn put_chunk(&self, i: usize, images: &[u8], labels: Option<&[i64]>) -> Result<usize, EvalError> {
        let what = self.path.display().to_string();
        let per = self.height * self.width * 3;
        if images.is_empty() || images.len() % per != 0 {
            return Err(bad(what, format!(
                "{} bytes of images; expected a positive multiple of {}×{}×3 = {per}",
                images.len(), self.height, self.width
            )));
        }
        let n = images.len() / per;
        match (self.labels, labels) {
            (true, Some(l)) if l.len() == n => {}
            (true, Some(l)) => return Err(bad(what, format!("{} labels for {n} images", l.len()))),
            (true, None) => return Err(bad(what, "no labels, but the archive was opened with labels")),
            (false, Some(_)) => return Err(bad(what, "labels given, but the archive was opened without labels")),
            (false, None) => {}
        }
        // Labels first: an images chunk is the commit point that `open` counts.
        if let Some(l) = labels {
            let a = NpyArray { shape: vec![n], data: NpyData::I64(l.to_vec()) };
            write_file_atomic(&self.chunk_path(i, true), &npy_bytes(&a))?;
        }
        let mut bytes = npy_header_bytes(DType::U8, &[n, self.height, self.width, 3]);
        bytes.extend_from_slice(images);
        write_file_atomic(&self.chunk_path(i, false), &bytes)?;
        Ok(n)
    }

    /// Appends a uint8 N×H×W×3 tensor (any device) and optional labels.
    pub fn append_tensor(&mut self, images: &Tensor, labels: Option<&[i64]>) -> Result<(), EvalError> {
        let bytes = self.tensor_bytes(images)?;
        self.append(&bytes, labels)
    }

    /// [`put_chunk`](Self::put_chunk) for a uint8 N×H×W×3 tensor (any device).
    pub fn put_chunk_tensor(&self, i: usize, images: &Tensor, labels: Option<&[i64]>) -> Result<usize, EvalError> {
        let bytes = self.tensor_bytes(images)?;
        self.put_chunk(i, &bytes, labels)
    }

    fn tensor_bytes(&self, images: &Tensor) -> Result<Vec<u8>, EvalError> {
        let size = images.size();
        if images.kind() != Kind::Uint8 || size.len() != 4 || size[1..] != [self.height as i64, self.width as i64, 3] {
            return Err(bad(self.path.display().to_string(), format!(
                "images {:?} {size:?}; expected Uint8 N×{}×{}×3 (NHWC)", images.kind(), self.height, self.width
            )));
        }
        let flat = images.f_to(tch::Device::Cpu)?.f_contiguous()?.f_reshape([-1])?;
        Ok(Vec::<u8>::try_from(&flat)?)
    }

    /// Writes `<path>` (arr_0 and, with labels, arr_1) and removes the parts folder.
    pub fn finish(self) -> Result<PathBuf, EvalError> {
        let path = self.path.clone();
        if self.n == 0 {
            return Err(bad(path.display().to_string(), "no images were appended; an archive needs at least 1"));
        }
        let img_bytes = (self.n * self.height * self.width * 3) as u64;
        atomic_zip(&path, |zw| {
            let opts = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Stored)
                .large_file(img_bytes + 4096 >= u32::MAX as u64);
            zw.start_file("arr_0.npy", opts).map_err(|e| zip_err(&path, e))?;
            zw.write_all(&npy_header_bytes(DType::U8, &[self.n, self.height, self.width, 3]))
                .map_err(|e| io_err(&path, e))?;
            self.copy_chunks(zw, false)?;
            if self.labels {
                let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
                zw.start_file("arr_1.npy", opts).map_err(|e| zip_err(&path, e))?;
                zw.write_all(&npy_header_bytes(DType::I64, &[self.n])).map_err(|e| io_err(&path, e))?;
                self.copy_chunks(zw, true)?;
            }
            Ok(())
        })?;
        fs::remove_dir_all(&self.parts).map_err(|e| io_err(&self.parts, e))?;
        Ok(path)
    }

    fn copy_chunks(&self, zw: &mut ZipWriter<BufWriter<File>>, labels: bool) -> Result<(), EvalError> {
        for i in 0..self.chunks {
            let p = self.chunk_path(i, labels);
            let mut f = BufReader::new(File::open(&p).map_err(|e| io_err(&p, e))?);
            read_npy_header(&mut f, &p.display().to_string())?;
            std::io::copy(&mut f, zw).map_err(|e| io_err(&p, e))?;
        }
        Ok(())
    }
}

fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), EvalError> {
    ditbench_common::write_atomic(path, bytes).map_err(|e| io_err(path, e))
}
