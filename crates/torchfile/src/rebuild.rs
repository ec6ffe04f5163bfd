//! Tensor rebuild: what `torch._utils._rebuild_tensor_v2` and friends mean, and turning the
//! VM's tree into [`Value`]s with the storage bytes read and made contiguous.
//!
//! Reading is two-phase so that memory stays near the size of the tensors wanted: the pickle
//! only yields [`TensorSpec`]s (storage key, offset, sizes, strides); then each storage is read
//! once, every tensor viewing it is cut out of it, and the storage is dropped before the next
//! one is read. A tensor that is the whole of its storage (the usual state-dict case) takes the
//! storage's buffer without a copy.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;

use crate::error::{Error, Result};
use crate::pickle::PValue;
use crate::tensor::{DType, TensorData};
use crate::value::{Object, Value};

/// A storage (or dtype) class as named in the file, with its element size even when this crate
/// cannot convert the dtype: the legacy format needs the size to skip over such storages.
#[derive(Debug, Clone)]
pub(crate) struct ElemType {
    pub name: String,
    pub size: usize,
    pub dtype: Option<DType>,
}

/// Element type of a storage class (`torch.FloatStorage`, `torch.cuda.HalfStorage`,
/// `torch.UntypedStorage`) or dtype (`torch.float32`) global.
fn elem_type(full: &str) -> Option<ElemType> {
    use DType::*;
    let short = full
        .strip_prefix("torch.cuda.")
        .or_else(|| full.strip_prefix("torch.storage."))
        .or_else(|| full.strip_prefix("torch."))?;
    let (size, dtype) = match short {
        "FloatStorage" | "float32" | "float" => (4, Some(F32)),
        "DoubleStorage" | "float64" | "double" => (8, Some(F64)),
        "HalfStorage" | "float16" | "half" => (2, Some(F16)),
        "BFloat16Storage" | "bfloat16" => (2, Some(BF16)),
        "LongStorage" | "int64" | "long" => (8, Some(I64)),
        "IntStorage" | "int32" | "int" => (4, Some(I32)),
        "ShortStorage" | "int16" | "short" => (2, Some(I16)),
        "CharStorage" | "int8" => (1, Some(I8)),
        // An untyped storage is bytes; a tensor on it carries its own dtype (_rebuild_tensor_v3).
        "ByteStorage" | "uint8" | "UntypedStorage" => (1, Some(U8)),
        "BoolStorage" | "bool" => (1, Some(Bool)),
        "ComplexFloatStorage" | "complex64" | "cfloat" => (8, None),
        "ComplexDoubleStorage" | "complex128" | "cdouble" => (16, None),
        "complex32" | "chalf" => (4, None),
        "QInt8Storage" | "QUInt8Storage" | "QUInt4x2Storage" | "QUInt2x4Storage" => (1, None),
        "QInt32Storage" => (4, None),
        "float8_e4m3fn" | "float8_e5m2" | "float8_e4m3fnuz" | "float8_e5m2fnuz"
        | "float8_e8m0fnu" => (1, None),
        "uint16" => (2, None),
        "uint32" => (4, None),
        "uint64" => (8, None),
        _ => return None,
    };
    Some(ElemType {
        name: full.to_owned(),
        size,
        dtype,
    })
}

/// A storage as referenced by a persistent id.
#[derive(Debug)]
pub(crate) struct StorageRef {
    /// Record name in the zip (`data/<key>`) or entry of the legacy key list.
    pub key: String,
    pub elem: ElemType,
    /// Elements of `elem` in this storage (or in this view of it).
    pub numel: u64,
    /// Legacy storage views (files from PyTorch < 1.x): where the view starts in its root.
    pub view_byte_offset: Option<u64>,
}

/// Every storage the pickle referred to, by key. The legacy format needs the element size of
/// each to walk the storage section, which only stores element counts.
#[derive(Debug, Default)]
pub(crate) struct StorageTable {
    pub elem_size: HashMap<String, usize>,
}

/// A tensor still to be read: `_rebuild_tensor_v2(storage, offset, size, stride, ...)`.
#[derive(Debug)]
pub(crate) struct TensorSpec {
    pub storage: Rc<StorageRef>,
    pub elem: ElemType,
    /// In elements of `elem`, from the start of the storage (or view).
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

/// The meaning of a persistent id: `("storage", storage_type, key, location, numel)` in the
/// zip format, with a sixth `view_metadata` item in the legacy one.
pub(crate) fn persistent_load(pid: &PValue, table: &mut StorageTable) -> Result<PValue, String> {
    let items = match pid {
        PValue::Tuple(t) => t.clone(),
        other => {
            return Err(format!(
                "persistent id is a {}, expected a tuple",
                other.kind()
            ))
        }
    };
    match items.first().and_then(PValue::as_str) {
        Some("storage") => {}
        // torch.save(module) records the source of module classes; the object is data[0].
        Some("module") if items.len() >= 2 => return Ok(items[1].clone()),
        _ => {
            return Err(format!(
                "unknown persistent id {:?}",
                items.first().map(PValue::kind)
            ))
        }
    }
    if items.len() < 5 {
        return Err(format!(
            "storage persistent id has {} items, expected 5 or 6",
            items.len()
        ));
    }
    let elem = match &items[1] {
        PValue::Global(g) => {
            elem_type(&g.full()).ok_or_else(|| format!("unknown storage type {}", g.full()))?
        }
        other => return Err(format!("storage type is a {}", other.kind())),
    };
    let key = match &items[2] {
        PValue::Int(i) => i.to_string(),
        k => k
            .as_str()
            .ok_or_else(|| format!("storage key is a {}", k.kind()))?
            .to_owned(),
    };
    let numel = items[4]
        .as_int()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or("storage size is not a non-negative int")?;
    let (numel, view_byte_offset) = match items.get(5) {
        None | Some(PValue::None) => (numel, None),
        Some(view) => match view.sequence().as_deref() {
            Some([_view_key, offset, size]) => {
                let offset = offset
                    .as_int()
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or("bad storage view offset")?;
                let size = size
                    .as_int()
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or("bad storage view size")?;
                (size, Some(offset * elem.size as u64))
            }
            _ => return Err("storage view metadata is not (key, offset, size)".into()),
        },
    };
    table.elem_size.entry(key.clone()).or_insert(elem.size);
    Ok(PValue::Storage(Rc::new(StorageRef {
        key,
        elem,
        numel,
        view_byte_offset,
    })))
}

fn dims(v: &PValue, what: &str) -> Result<Vec<u64>, String> {
    let items = v
        .sequence()
        .ok_or_else(|| format!("tensor {what} is a {}", v.kind()))?;
    items
        .iter()
        .map(|d| {
            d.as_int()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| format!("tensor {what} holds a {}", d.kind()))
        })
        .collect()
}

/// Calls of torch functions that produce tensors; None for any other name.
pub(crate) fn call_torch(name: &str, args: &[PValue]) -> Option<Result<PValue, String>> {
    let short = name.strip_prefix("torch._utils.")?;
    Some(match short {
        "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3" => {
            rebuild_tensor(short, args)
        }
        // Parameters and device tensors wrap a tensor pickled as their first argument.
        "_rebuild_parameter"
        | "_rebuild_parameter_with_state"
        | "_rebuild_device_tensor_from_cpu_tensor" => match args.first() {
            Some(t @ PValue::Tensor(_)) => Ok(t.clone()),
            other => Err(format!(
                "{name} of a {}",
                other.map(PValue::kind).unwrap_or_else(|| "nothing".into())
            )),
        },
        _ => return None,
    })
}

fn rebuild_tensor(func: &str, args: &[PValue]) -> Result<PValue, String> {
    if args.len() < 4 || (func == "_rebuild_tensor_v3" && args.len() < 7) {
        return Err(format!("{func} with {} arguments", args.len()));
    }
    let storage = match &args[0] {
        PValue::Storage(s) => s.clone(),
        other => return Err(format!("{func} of a {}, expected a storage", other.kind())),
    };
    let offset = args[1]
        .as_int()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or("tensor storage offset is not a non-negative int")?;
    let shape = dims(&args[2], "size")?;
    let stride = dims(&args[3], "stride")?;
    if shape.len() != stride.len() {
        return Err(format!(
            "tensor with {} sizes but {} strides",
            shape.len(),
            stride.len()
        ));
    }
    let elem = if func == "_rebuild_tensor_v3" {
        match &args[6] {
            PValue::Global(g) => {
                elem_type(&g.full()).ok_or_else(|| format!("unknown dtype {}", g.full()))?
            }
            other => return Err(format!("tensor dtype is a {}", other.kind())),
        }
    } else {
        storage.elem.clone()
    };
    Ok(PValue::Tensor(Rc::new(TensorSpec {
        storage,
        elem,
        offset,
        shape,
        stride,
    })))
}

/// Where storage bytes come from (a zip archive or the tail of a legacy file).
pub(crate) trait StorageSource {
    /// Calls `sink(key, bytes)` once for every key in `keys`, with the storage's raw bytes.
    fn read_storages(
        &mut self,
        keys: &[&str],
        sink: &mut dyn FnMut(&str, Vec<u8>) -> Result<()>,
    ) -> Result<()>;
    /// Whether storage bytes are big-endian (zip `byteorder` record).
    fn big_endian(&self) -> bool;
    fn path(&self) -> &Path;
}

type SpecId = *const TensorSpec;

/// Reads the tensors of `specs` (distinct), at most one storage in memory at a time.
fn materialize(
    specs: &[Rc<TensorSpec>],
    source: &mut dyn StorageSource,
) -> Result<HashMap<SpecId, TensorData>> {
    let path = source.path().to_owned();
    // Fail on unsupported dtypes before reading gigabytes.
    for s in specs {
        if s.elem.dtype.is_none() {
            return Err(Error::UnsupportedDtype {
                name: s.elem.name.clone(),
            });
        }
    }
    let mut by_key: BTreeMap<&str, Vec<&Rc<TensorSpec>>> = BTreeMap::new();
    for s in specs {
        by_key.entry(&s.storage.key).or_default().push(s);
    }
    let keys: Vec<&str> = by_key.keys().copied().collect();
    let big_endian = source.big_endian();
    let mut out = HashMap::new();
    source.read_storages(&keys, &mut |key, bytes| {
        let users = &by_key[key];
        let mut bytes = Some(bytes);
        for (i, spec) in users.iter().enumerate() {
            let dtype = spec.elem.dtype.expect("checked above");
            let last = i + 1 == users.len();
            let data = cut(spec, &mut bytes, last, &path)?;
            let mut t = TensorData {
                dtype,
                shape: spec.shape.iter().map(|&d| d as usize).collect(),
                data,
            };
            if big_endian {
                swap_bytes(&mut t);
            }
            out.insert(Rc::as_ptr(spec), t);
        }
        Ok(())
    })?;
    Ok(out)
}

/// The contiguous bytes of `spec` out of its storage's bytes. `may_take`: no later tensor needs
/// the storage, so a tensor covering all of it can take the buffer instead of copying.
fn cut(
    spec: &TensorSpec,
    storage: &mut Option<Vec<u8>>,
    may_take: bool,
    path: &Path,
) -> Result<Vec<u8>> {
    let invalid = |message: String| Error::InvalidTensor {
        path: path.to_owned(),
        message,
    };
    let bytes = storage
        .as_ref()
        .expect("storage is taken only by its last user");
    let es = spec.elem.size as u64;
    let (start, limit) = match spec.storage.view_byte_offset {
        None => (0, bytes.len() as u64),
        Some(off) => (
            off,
            off.saturating_add(
                spec.storage
                    .numel
                    .saturating_mul(spec.storage.elem.size as u64),
            ),
        ),
    };
    let limit = limit.min(bytes.len() as u64);
    let numel = spec
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| invalid("element count overflows".into()))?;
    if numel == 0 {
        return Ok(Vec::new());
    }
    // Highest element index the view touches, in u128 so hostile sizes cannot overflow.
    let max_index: u128 = spec.offset as u128
        + spec
            .shape
            .iter()
            .zip(&spec.stride)
            .map(|(&d, &s)| (d as u128 - 1) * s as u128)
            .sum::<u128>();
    let end = start as u128 + (max_index + 1) * es as u128;
    if end > limit as u128 {
        return Err(invalid(format!(
            "tensor (offset {}, size {:?}, stride {:?}, {}) reaches byte {end} of storage {} which has {} bytes",
            spec.offset, spec.shape, spec.stride, spec.elem.name, spec.storage.key, limit
        )));
    }
    let out_len =
        usize::try_from(numel * es).map_err(|_| invalid("tensor larger than memory".into()))?;
    let base = (start + spec.offset * es) as usize;
    let es = es as usize;
    let shape: Vec<usize> = spec.shape.iter().map(|&d| d as usize).collect();
    let stride: Vec<usize> = spec.stride.iter().map(|&d| d as usize).collect();

    if is_contiguous(&shape, &stride) {
        if may_take && base == 0 && out_len == bytes.len() {
            return Ok(storage.take().expect("present"));
        }
        return Ok(bytes[base..base + out_len].to_vec());
    }
    Ok(gather(bytes, base, es, &shape, &stride, out_len))
}

/// Row-major contiguous (dimensions of size 1 may have any stride, as in PyTorch).
fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected *= d;
    }
    true
}

/// Strided copy, row by row when the last dimension is dense. Bounds were checked by the caller.
fn gather(
    bytes: &[u8],
    base: usize,
    es: usize,
    shape: &[usize],
    stride: &[usize],
    out_len: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(out_len);
    let nd = shape.len();
    if nd == 0 {
        out.extend_from_slice(&bytes[base..base + es]);
        return out;
    }
    let (inner, inner_stride) = (shape[nd - 1], stride[nd - 1]);
    let mut idx = vec![0usize; nd - 1];
    loop {
        let row = base
            + idx
                .iter()
                .zip(stride)
                .map(|(&i, &s)| i * s * es)
                .sum::<usize>();
        if inner_stride == 1 {
            out.extend_from_slice(&bytes[row..row + inner * es]);
        } else {
            for j in 0..inner {
                let at = row + j * inner_stride * es;
                out.extend_from_slice(&bytes[at..at + es]);
            }
        }
        // Odometer increment over the outer dimensions.
        let mut d = nd - 1;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

fn swap_bytes(t: &mut TensorData) {
    let es = t.dtype.size();
    if es > 1 {
        t.data.chunks_exact_mut(es).for_each(<[u8]>::reverse);
    }
}

/// Deepest nesting accepted; a pickle can build a cycle (a list containing itself), which
/// would otherwise recurse forever.
const MAX_DEPTH: usize = 512;

/// Turns a VM value into a [`Value`], reading the tensors it contains (and only those).
pub(crate) fn resolve(root: &PValue, source: &mut dyn StorageSource) -> Result<Value> {
    let mut walk = Walk::default();
    walk.count(root, 0)?;
    let specs: Vec<Rc<TensorSpec>> = walk.order.clone();
    walk.data = materialize(&specs, source)?;
    walk.convert(root, 0)
}

#[derive(Default)]
struct Walk {
    /// Distinct tensors in first-seen order, and how many times each appears in the tree (a
    /// tensor object referenced twice becomes two Values; only the last one avoids a copy).
    order: Vec<Rc<TensorSpec>>,
    uses: HashMap<SpecId, usize>,
    /// Storages pickled on their own (not as a tensor) become 1-D tensors over the storage.
    bare_storages: HashMap<*const StorageRef, Rc<TensorSpec>>,
    data: HashMap<SpecId, TensorData>,
}

fn too_deep() -> Error {
    Error::InvalidPickle {
        offset: 0,
        context: "object tree".into(),
        message: format!("nesting deeper than {MAX_DEPTH} (a cyclic structure?)"),
    }
}

impl Walk {
    fn storage_spec(&mut self, s: &Rc<StorageRef>) -> Rc<TensorSpec> {
        self.bare_storages
            .entry(Rc::as_ptr(s))
            .or_insert_with(|| {
                Rc::new(TensorSpec {
                    storage: s.clone(),
                    elem: s.elem.clone(),
                    offset: 0,
                    shape: vec![s.numel],
                    stride: vec![1],
                })
            })
            .clone()
    }

    fn note(&mut self, spec: Rc<TensorSpec>) {
        let n = self.uses.entry(Rc::as_ptr(&spec)).or_insert(0);
        if *n == 0 {
            self.order.push(spec);
        }
        *n += 1;
    }

    fn count(&mut self, v: &PValue, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        match v {
            PValue::Tensor(t) => self.note(t.clone()),
            PValue::Storage(s) => {
                let spec = self.storage_spec(s);
                self.note(spec);
            }
            PValue::Tuple(items) => items.iter().try_for_each(|i| self.count(i, depth + 1))?,
            PValue::List(items) | PValue::Set(items) => items
                .borrow()
                .iter()
                .try_for_each(|i| self.count(i, depth + 1))?,
            PValue::Dict(d) => d.borrow().items.iter().try_for_each(|(k, v)| {
                self.count(k, depth + 1)?;
                self.count(v, depth + 1)
            })?,
            PValue::Object(o) => {
                let o = o.borrow();
                o.args
                    .iter()
                    .chain(&o.list_items)
                    .chain(&o.state)
                    .try_for_each(|i| self.count(i, depth + 1))?;
                o.kwargs
                    .iter()
                    .chain(&o.dict_items)
                    .try_for_each(|(k, v)| {
                        self.count(k, depth + 1)?;
                        self.count(v, depth + 1)
                    })?;
            }
            _ => {}
        }
        Ok(())
    }

    fn take_tensor(&mut self, spec: &Rc<TensorSpec>) -> Value {
        let id = Rc::as_ptr(spec);
        let n = self.uses.get_mut(&id).expect("counted");
        *n -= 1;
        let t = if *n == 0 {
            self.data.remove(&id)
        } else {
            self.data.get(&id).cloned()
        };
        Value::Tensor(t.expect("materialized"))
    }

    fn convert(&mut self, v: &PValue, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        let d = depth + 1;
        Ok(match v {
            PValue::None => Value::None,
            PValue::Bool(b) => Value::Bool(*b),
            PValue::Int(i) => Value::Int(*i),
            PValue::BigInt(b) => Value::BigInt(b.clone()),
            PValue::Float(f) => Value::Float(*f),
            PValue::Str(s) => Value::Str(s.clone()),
            PValue::Bytes(b) => Value::Bytes(b.clone()),
            PValue::Tuple(items) => Value::Tuple(self.convert_all(items, d)?),
            PValue::List(items) => Value::List(self.convert_all(&items.borrow(), d)?),
            PValue::Set(items) => Value::Set(self.convert_all(&items.borrow(), d)?),
            PValue::Dict(dict) => Value::Dict(self.convert_pairs(&dict.borrow().items, d)?),
            PValue::Global(g) => Value::Global(g.full()),
            PValue::Object(o) => {
                let o = o.borrow();
                Value::Object(Object {
                    class: o.class.clone(),
                    args: self.convert_all(&o.args, d)?,
                    kwargs: self.convert_pairs(&o.kwargs, d)?,
                    state: match &o.state {
                        Some(s) => Some(Box::new(self.convert(s, d)?)),
                        None => None,
                    },
                    list_items: self.convert_all(&o.list_items, d)?,
                    dict_items: self.convert_pairs(&o.dict_items, d)?,
                })
            }
            PValue::Tensor(t) => self.take_tensor(t),
            PValue::Storage(s) => {
                let spec = self.storage_spec(s);
                self.take_tensor(&spec)
            }
        })
    }

    fn convert_all(&mut self, items: &[PValue], depth: usize) -> Result<Vec<Value>> {
        items.iter().map(|i| self.convert(i, depth)).collect()
    }

    fn convert_pairs(
        &mut self,
        items: &[(PValue, PValue)],
        depth: usize,
    ) -> Result<Vec<(Value, Value)>> {
        items
            .iter()
            .map(|(k, v)| Ok((self.convert(k, depth)?, self.convert(v, depth)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_transpose_and_broadcast() {
        // 2x3 row-major [0..6) as u8; its transpose is 3x2 with strides (1, 3).
        let bytes: Vec<u8> = (0..6).collect();
        assert_eq!(
            gather(&bytes, 0, 1, &[3, 2], &[1, 3], 6),
            vec![0, 3, 1, 4, 2, 5]
        );
        // Stride 0 (expand) repeats.
        assert_eq!(gather(&bytes, 1, 1, &[2, 2], &[0, 1], 4), vec![1, 2, 1, 2]);
        // 0-d.
        assert_eq!(gather(&bytes, 4, 1, &[], &[], 1), vec![4]);
        assert!(is_contiguous(&[2, 1, 3], &[3, 7, 1]));
        assert!(!is_contiguous(&[3, 2], &[1, 3]));
    }
}
