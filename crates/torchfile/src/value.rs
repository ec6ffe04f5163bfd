//! The object tree a `torch.save` file holds, with tensors already read.

use crate::tensor::TensorData;

/// A Python value from the pickle, with tensors loaded. Containers keep pickle order, which for
/// a state dict is the module's parameter order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An int beyond i64, as pickled: two's-complement little-endian bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// `set` and `frozenset`, in pickle order.
    Set(Vec<Value>),
    /// `dict`, `collections.OrderedDict` (its `_metadata` dropped) and `defaultdict`.
    Dict(Vec<(Value, Value)>),
    Tensor(TensorData),
    /// A class or function named but not called, e.g. `torch.float16` as `"torch.float16"`.
    Global(String),
    /// An instance of a class this reader does not know (argparse.Namespace, torch.device, ...).
    Object(Object),
}

/// What the pickle said about an unknown object, kept so callers can still dig values out of
/// it (e.g. the hyper-parameters in an `argparse.Namespace`, which live in `state`).
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// `module.qualname` of the class (or factory function) that was called.
    pub class: String,
    /// Positional arguments of the call.
    pub args: Vec<Value>,
    /// Keyword arguments (NEWOBJ_EX only).
    pub kwargs: Vec<(Value, Value)>,
    /// The argument of BUILD (usually the instance `__dict__`), if any.
    pub state: Option<Box<Value>>,
    /// Items added by APPEND/APPENDS (list subclasses).
    pub list_items: Vec<Value>,
    /// Items added by SETITEM/SETITEMS (dict subclasses).
    pub dict_items: Vec<(Value, Value)>,
}

impl Object {
    /// An attribute from the BUILD state when that state is a dict (the usual `__dict__`).
    pub fn attr(&self, name: &str) -> Option<&Value> {
        self.state.as_deref().and_then(|s| s.get(name))
    }
}

impl Value {
    /// The entry of a dict with string key `key` (None for a non-dict or a missing key).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The entry of a dict with int key `key` (optimizer state is keyed by parameter index).
    pub fn get_int(&self, key: i64) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_int() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// Int, Bool or Float as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            Value::Bool(b) => Some(*b as i64 as f64),
            _ => None,
        }
    }

    pub fn as_tensor(&self) -> Option<&TensorData> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// A big int's value when it fits in i128 (also accepts plain ints).
    pub fn as_i128(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i as i128),
            Value::BigInt(bytes) => bigint_to_i128(bytes),
            _ => None,
        }
    }

    /// The keys of a dict rendered as strings (str keys as is, int keys in decimal, others by
    /// their kind); None when this is not a dict. Used in error messages and listings.
    pub fn dict_keys(&self) -> Option<Vec<String>> {
        match self {
            Value::Dict(items) => Some(items.iter().map(|(k, _)| key_label(k)).collect()),
            _ => None,
        }
    }

    /// One line naming what this value is, for error messages.
    pub fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Tuple(v) => format!("tuple of {}", v.len()),
            Value::List(v) => format!("list of {}", v.len()),
            Value::Set(v) => format!("set of {}", v.len()),
            Value::Dict(v) => format!("dict of {}", v.len()),
            Value::Tensor(t) => format!("tensor {} {:?}", t.dtype, t.shape),
            Value::Global(g) => format!("global {g}"),
            Value::Object(o) => format!("object {}", o.class),
        }
    }

    /// The tensors of this dict and of the dicts nested in it, named by their keys joined with
    /// '.' (int keys in decimal), in file order. Values that are neither tensors nor dicts
    /// (ints, lists, objects, ...) and entries with other keys are skipped.
    pub fn tensors(&self) -> Vec<(String, &TensorData)> {
        let mut out = Vec::new();
        collect_tensors(self, "", &mut out);
        out
    }

    /// Like [`Value::tensors`] but moving the tensors out, without copying their data.
    pub fn into_tensors(self) -> Vec<(String, TensorData)> {
        let mut out = Vec::new();
        into_tensors(self, String::new(), &mut out);
        out
    }
}

fn key_label(k: &Value) -> String {
    match k {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => format!("<{}>", other.kind()),
    }
}

fn flat_key(k: &Value) -> Option<String> {
    match k {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn collect_tensors<'a>(v: &'a Value, prefix: &str, out: &mut Vec<(String, &'a TensorData)>) {
    if let Value::Dict(items) = v {
        for (k, v) in items {
            let Some(k) = flat_key(k) else { continue };
            let name = format!("{prefix}{k}");
            match v {
                Value::Tensor(t) => out.push((name, t)),
                Value::Dict(_) => collect_tensors(v, &format!("{name}."), out),
                _ => {}
            }
        }
    }
}

fn into_tensors(v: Value, prefix: String, out: &mut Vec<(String, TensorData)>) {
    if let Value::Dict(items) = v {
        for (k, v) in items {
            let Some(k) = flat_key(&k) else { continue };
            let name = format!("{prefix}{k}");
            match v {
                Value::Tensor(t) => out.push((name, t)),
                d @ Value::Dict(_) => into_tensors(d, format!("{name}."), out),
                _ => {}
            }
        }
    }
}

/// Two's-complement little-endian (as in pickle's LONG1/LONG4) to i128, if it fits.
pub(crate) fn bigint_to_i128(bytes: &[u8]) -> Option<i128> {
    if bytes.is_empty() {
        return Some(0);
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let fill = if negative { 0xff } else { 0 };
    if bytes.len() > 16 && bytes[16..].iter().any(|&b| b != fill) {
        return None;
    }
    let mut buf = [fill; 16];
    let n = bytes.len().min(16);
    buf[..n].copy_from_slice(&bytes[..n]);
    let v = i128::from_le_bytes(buf);
    // A 16+-byte encoding whose 16th byte has the wrong sign bit does not fit either.
    if (v < 0) != negative {
        return None;
    }
    Some(v)
}
