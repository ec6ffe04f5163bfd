//! A small pickle virtual machine: the opcodes `torch.save` emits at protocols 2 to 5 (plus the
//! text ones of protocols 0/1 that old checkpoints may hold).
//!
//! It never imports or runs anything: a GLOBAL is just a name, and calling it either builds one
//! of the few values we understand (dicts, sets, torch.Size, tensors) or an opaque
//! [`PValue::Object`] that records the call. Lists, dicts and objects are shared through `Rc`
//! because the memo hands out *references*: a dict memoised (BINPUT) while empty and filled by a
//! later SETITEMS must be seen filled wherever BINGET fetches it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::Path;
use std::rc::Rc;

use crate::error::{Error, Result};
use crate::rebuild::{self, StorageRef, StorageTable, TensorSpec};
use crate::value::bigint_to_i128;

/// A value on the VM stack, before tensors are read.
#[derive(Debug, Clone)]
pub(crate) enum PValue {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Rc<Vec<PValue>>),
    List(Rc<RefCell<Vec<PValue>>>),
    Set(Rc<RefCell<Vec<PValue>>>),
    Dict(Rc<RefCell<PDict>>),
    Global(Rc<Global>),
    Object(Rc<RefCell<PObject>>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorSpec>),
}

#[derive(Debug)]
pub(crate) struct Global {
    pub module: String,
    pub name: String,
}

impl Global {
    pub fn full(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }
}

#[derive(Debug, Default)]
pub(crate) struct PObject {
    pub class: String,
    pub args: Vec<PValue>,
    pub kwargs: Vec<(PValue, PValue)>,
    pub state: Option<PValue>,
    pub list_items: Vec<PValue>,
    pub dict_items: Vec<(PValue, PValue)>,
}

/// An insertion-ordered dict. Assigning an existing key replaces its value in place, as in
/// Python; the index makes that O(1) for the str/int keys state dicts use.
#[derive(Debug, Default)]
pub(crate) struct PDict {
    pub items: Vec<(PValue, PValue)>,
    index: HashMap<KeyId, usize>,
}

#[derive(Debug, PartialEq, Eq, Hash)]
enum KeyId {
    Str(String),
    Int(i64),
}

impl PDict {
    pub fn insert(&mut self, k: PValue, v: PValue) {
        let id = match &k {
            PValue::Str(s) => Some(KeyId::Str(s.clone())),
            PValue::Int(i) => Some(KeyId::Int(*i)),
            PValue::Bool(b) => Some(KeyId::Int(*b as i64)), // True == 1 in Python
            _ => None,
        };
        match id {
            Some(id) => {
                if let Some(&i) = self.index.get(&id) {
                    self.items[i].1 = v;
                } else {
                    self.index.insert(id, self.items.len());
                    self.items.push((k, v));
                }
            }
            None => self.items.push((k, v)),
        }
    }

    pub fn get_str(&self, key: &str) -> Option<&PValue> {
        self.index
            .get(&KeyId::Str(key.to_owned()))
            .map(|&i| &self.items[i].1)
    }
}

impl PValue {
    pub fn kind(&self) -> String {
        match self {
            PValue::None => "None".into(),
            PValue::Bool(_) => "bool".into(),
            PValue::Int(_) | PValue::BigInt(_) => "int".into(),
            PValue::Float(_) => "float".into(),
            PValue::Str(_) => "str".into(),
            PValue::Bytes(_) => "bytes".into(),
            PValue::Tuple(t) => format!("tuple of {}", t.len()),
            PValue::List(l) => format!("list of {}", l.borrow().len()),
            PValue::Set(s) => format!("set of {}", s.borrow().len()),
            PValue::Dict(d) => format!("dict of {}", d.borrow().items.len()),
            PValue::Global(g) => format!("global {}", g.full()),
            PValue::Object(o) => format!("object {}", o.borrow().class),
            PValue::Storage(s) => format!("storage {}", s.key),
            PValue::Tensor(_) => "tensor".into(),
        }
    }

    /// Dict keys as labels (str as is, int in decimal), for listings and error messages.
    pub fn dict_keys(&self) -> Option<Vec<String>> {
        match self {
            PValue::Dict(d) => Some(
                d.borrow()
                    .items
                    .iter()
                    .map(|(k, _)| match k {
                        PValue::Str(s) => s.clone(),
                        PValue::Int(i) => i.to_string(),
                        other => format!("<{}>", other.kind()),
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            PValue::Int(i) => Some(*i),
            PValue::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// A str, or bytes that are UTF-8 (Python 2 pickles store names as byte strings).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PValue::Str(s) => Some(s),
            PValue::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Items of a tuple or list (cheap: elements are reference-counted).
    pub fn sequence(&self) -> Option<Vec<PValue>> {
        match self {
            PValue::Tuple(t) => Some(t.as_ref().clone()),
            PValue::List(l) => Some(l.borrow().clone()),
            _ => None,
        }
    }
}

/// Opcode names, for error messages (None: not a pickle opcode at all).
fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

/// Runs one pickle from a reader positioned at its first byte.
pub(crate) struct Unpickler<'a, R: BufRead> {
    reader: &'a mut R,
    /// Offset of the next byte, counted from wherever the caller says the pickle starts, so
    /// errors point into the file (legacy format) or into the record (zip format).
    pos: u64,
    op_pos: u64,
    op: u8,
    path: &'a Path,
    context: &'a str,
    stack: Vec<PValue>,
    marks: Vec<usize>,
    memo: HashMap<u64, PValue>,
    storages: &'a mut StorageTable,
}

impl<'a, R: BufRead> Unpickler<'a, R> {
    pub fn new(
        reader: &'a mut R,
        start_pos: u64,
        path: &'a Path,
        context: &'a str,
        storages: &'a mut StorageTable,
    ) -> Self {
        Unpickler {
            reader,
            pos: start_pos,
            op_pos: start_pos,
            op: 0,
            path,
            context,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            storages,
        }
    }

    /// Offset just past the STOP opcode once `load` returned.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::InvalidPickle {
            offset: self.op_pos,
            context: self.context.to_owned(),
            message: message.into(),
        }
    }

    fn truncated(&self) -> Error {
        let what = if self.pos == self.op_pos {
            format!(
                "{} ends at byte {} before its STOP opcode",
                self.context, self.pos
            )
        } else {
            format!(
                "{} ends at byte {} inside opcode {} (started at byte {})",
                self.context,
                self.pos,
                opcode_name(self.op).unwrap_or("?"),
                self.op_pos
            )
        };
        Error::Truncated {
            path: self.path.to_owned(),
            what,
        }
    }

    fn io(&self, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            self.truncated()
        } else {
            Error::Io {
                path: self.path.to_owned(),
                source: e,
            }
        }
    }

    fn read_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.reader.read_exact(&mut buf).map_err(|e| self.io(e))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn read_u8(&mut self) -> Result<u8> {
        Ok(self.read_array::<1>()?[0])
    }

    fn read_u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.read_array()?))
    }

    fn read_u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.read_array()?))
    }

    /// `len` bytes. Not preallocated from `len`: a corrupt length must fail as truncation, not
    /// as an allocation of petabytes.
    fn read_bytes(&mut self, len: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(len.min(1 << 20) as usize);
        let got = (&mut *self.reader)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(|e| self.io(e))?;
        self.pos += got as u64;
        if (got as u64) < len {
            return Err(self.truncated());
        }
        Ok(buf)
    }

    /// A text argument of the protocol-0 opcodes, without its newline.
    fn read_line(&mut self) -> Result<String> {
        let mut buf = Vec::new();
        let got = self
            .reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| self.io(e))?;
        self.pos += got as u64;
        if buf.pop() != Some(b'\n') {
            return Err(self.truncated());
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        String::from_utf8(buf).map_err(|_| self.err("non-UTF-8 text argument"))
    }

    fn utf8(&self, bytes: Vec<u8>) -> PValue {
        // Python pickles strings with 'surrogatepass'; lone surrogates are vanishingly rare in
        // checkpoints, so a lossy decode beats failing the whole file.
        match String::from_utf8(bytes) {
            Ok(s) => PValue::Str(s),
            Err(e) => PValue::Str(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }

    fn push(&mut self, v: PValue) {
        self.stack.push(v);
    }

    fn pop(&mut self) -> Result<PValue> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        Ok(self.stack.pop().unwrap())
    }

    fn top(&self) -> Result<&PValue> {
        self.stack.last().ok_or_else(|| self.err("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<PValue>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK on the stack"))?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&self, idx: u64) -> Result<PValue> {
        self.memo
            .get(&idx)
            .cloned()
            .ok_or_else(|| self.err(format!("memo entry {idx} is not defined")))
    }

    fn memo_put(&mut self, idx: u64) -> Result<()> {
        let v = self.top()?.clone();
        self.memo.insert(idx, v);
        Ok(())
    }

    fn int_from_le(&self, bytes: Vec<u8>) -> PValue {
        match bigint_to_i128(&bytes).and_then(|v| i64::try_from(v).ok()) {
            Some(v) => PValue::Int(v),
            None => PValue::BigInt(bytes),
        }
    }

    /// Runs the pickle up to STOP and returns its value.
    pub fn load(&mut self) -> Result<PValue> {
        loop {
            self.op_pos = self.pos;
            self.op = 0;
            let op = self.read_u8()?;
            self.op = op;
            match op {
                0x80 => {
                    let proto = self.read_u8()?;
                    if proto > 5 {
                        return Err(self.err(format!("pickle protocol {proto} is newer than 5")));
                    }
                }
                0x95 => {
                    // FRAME only groups opcodes for buffered reading; the content is unchanged.
                    self.read_u64()?;
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    // Like CPython: POP right after a MARK discards the mark.
                    if self.marks.last() == Some(&self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v);
                }

                // Numbers.
                b'J' => {
                    let v = i32::from_le_bytes(self.read_array()?);
                    self.push(PValue::Int(v as i64));
                }
                b'K' => {
                    let v = self.read_u8()?;
                    self.push(PValue::Int(v as i64));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.read_array()?);
                    self.push(PValue::Int(v as i64));
                }
                0x8a => {
                    let n = self.read_u8()? as u64;
                    let bytes = self.read_bytes(n)?;
                    let v = self.int_from_le(bytes);
                    self.push(v);
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.read_array()?);
                    if n < 0 {
                        return Err(self.err("LONG4 with a negative byte count"));
                    }
                    let bytes = self.read_bytes(n as u64)?;
                    let v = self.int_from_le(bytes);
                    self.push(v);
                }
                b'I' => {
                    let line = self.read_line()?;
                    let v = match line.as_str() {
                        "00" => PValue::Bool(false),
                        "01" => PValue::Bool(true),
                        s => {
                            PValue::Int(s.parse().map_err(|_| self.err(format!("bad INT {s:?}")))?)
                        }
                    };
                    self.push(v);
                }
                b'L' => {
                    let line = self.read_line()?;
                    let digits = line.strip_suffix('L').unwrap_or(&line);
                    let v = digits
                        .parse()
                        .map_err(|_| self.err(format!("LONG {line:?} beyond i64")))?;
                    self.push(PValue::Int(v));
                }
                b'G' => {
                    // The one big-endian number in pickle.
                    let v = f64::from_be_bytes(self.read_array()?);
                    self.push(PValue::Float(v));
                }
                b'F' => {
                    let line = self.read_line()?;
                    let v = line
                        .trim()
                        .parse()
                        .map_err(|_| self.err(format!("bad FLOAT {line:?}")))?;
                    self.push(PValue::Float(v));
                }
                b'N' => self.push(PValue::None),
                0x88 => self.push(PValue::Bool(true)),
                0x89 => self.push(PValue::Bool(false)),

                // Strings and bytes.
                b'X' => {
                    let n = self.read_u32()? as u64;
                    let b = self.read_bytes(n)?;
                    let v = self.utf8(b);
                    self.push(v);
                }
                0x8c => {
                    let n = self.read_u8()? as u64;
                    let b = self.read_bytes(n)?;
                    let v = self.utf8(b);
                    self.push(v);
                }
                0x8d => {
                    let n = self.read_u64()?;
                    let b = self.read_bytes(n)?;
                    let v = self.utf8(b);
                    self.push(v);
                }
                b'T' | b'U' => {
                    // Python 2 `str`. torch.load decodes these as UTF-8 (its default
                    // encoding), so do the same and keep undecodable ones as bytes.
                    let n = if op == b'T' {
                        let n = i32::from_le_bytes(self.read_array()?);
                        u64::try_from(n)
                            .map_err(|_| self.err("BINSTRING with a negative length"))?
                    } else {
                        self.read_u8()? as u64
                    };
                    let b = self.read_bytes(n)?;
                    let v = match String::from_utf8(b) {
                        Ok(s) => PValue::Str(s),
                        Err(e) => PValue::Bytes(e.into_bytes()),
                    };
                    self.push(v);
                }
                b'B' => {
                    let n = self.read_u32()? as u64;
                    let b = self.read_bytes(n)?;
                    self.push(PValue::Bytes(b));
                }
                b'C' => {
                    let n = self.read_u8()? as u64;
                    let b = self.read_bytes(n)?;
                    self.push(PValue::Bytes(b));
                }
                0x8e | 0x96 => {
                    let n = self.read_u64()?;
                    let b = self.read_bytes(n)?;
                    self.push(PValue::Bytes(b));
                }

                // Tuples.
                b')' => self.push(PValue::Tuple(Rc::new(Vec::new()))),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(PValue::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let floor = self.marks.last().copied().unwrap_or(0);
                    if self.stack.len() < floor + n {
                        return Err(self.err("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(PValue::Tuple(Rc::new(items)));
                }

                // Lists.
                b']' => self.push(PValue::List(Rc::new(RefCell::new(Vec::new())))),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(PValue::List(Rc::new(RefCell::new(items))));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }

                // Dicts.
                b'}' => self.push(PValue::Dict(Rc::default())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = PValue::Dict(Rc::default());
                    self.stack.push(dict);
                    self.set_items(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }

                // Sets.
                0x8f => self.push(PValue::Set(Rc::default())),
                0x90 => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        PValue::Set(s) => s.borrow_mut().extend(items),
                        other => return Err(self.err(format!("ADDITEMS to a {}", other.kind()))),
                    }
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(PValue::Set(Rc::new(RefCell::new(items))));
                }

                // Classes, calls and objects.
                b'c' => {
                    let module = self.read_line()?;
                    let name = self.read_line()?;
                    self.push(global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.as_str(), name.as_str()) {
                        (Some(m), Some(n)) => self.push(global(m.to_owned(), n.to_owned())),
                        _ => return Err(self.err("STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let args = args.sequence().ok_or_else(|| {
                        self.err(format!("REDUCE with {} as arguments", args.kind()))
                    })?;
                    let v = self.call(callable, args, Vec::new())?;
                    self.push(v);
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let args = args.sequence().ok_or_else(|| {
                        self.err(format!("NEWOBJ with {} as arguments", args.kind()))
                    })?;
                    let v = self.call(cls, args, Vec::new())?;
                    self.push(v);
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let args = args.sequence().ok_or_else(|| {
                        self.err(format!("NEWOBJ_EX with {} as arguments", args.kind()))
                    })?;
                    let kwargs = match kwargs {
                        PValue::Dict(d) => d.borrow().items.clone(),
                        other => {
                            return Err(self.err(format!(
                                "NEWOBJ_EX with {} as keyword arguments",
                                other.kind()
                            )))
                        }
                    };
                    let v = self.call(cls, args, kwargs)?;
                    self.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    self.build(state)?;
                }

                // Memo.
                b'q' => {
                    let i = self.read_u8()? as u64;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.read_u32()? as u64;
                    self.memo_put(i)?;
                }
                b'p' => {
                    let line = self.read_line()?;
                    let i = line
                        .parse()
                        .map_err(|_| self.err(format!("bad PUT index {line:?}")))?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.read_u8()? as u64;
                    let v = self.memo_get(i)?;
                    self.push(v);
                }
                b'j' => {
                    let i = self.read_u32()? as u64;
                    let v = self.memo_get(i)?;
                    self.push(v);
                }
                b'g' => {
                    let line = self.read_line()?;
                    let i = line
                        .parse()
                        .map_err(|_| self.err(format!("bad GET index {line:?}")))?;
                    let v = self.memo_get(i)?;
                    self.push(v);
                }

                // Persistent ids: how torch.save refers to tensor storages.
                b'Q' => {
                    let pid = self.pop()?;
                    let v =
                        rebuild::persistent_load(&pid, self.storages).map_err(|m| self.err(m))?;
                    self.push(v);
                }
                b'P' => {
                    let line = self.read_line()?;
                    let v = rebuild::persistent_load(&PValue::Str(line), self.storages)
                        .map_err(|m| self.err(m))?;
                    self.push(v);
                }

                _ => {
                    return Err(Error::UnsupportedOpcode {
                        opcode: op,
                        name: opcode_name(op).unwrap_or("unknown"),
                        offset: self.op_pos,
                        context: self.context.to_owned(),
                    })
                }
            }
        }
    }

    fn append(&mut self, items: Vec<PValue>) -> Result<()> {
        match self.top()? {
            PValue::List(l) => l.borrow_mut().extend(items),
            PValue::Object(o) => o.borrow_mut().list_items.extend(items),
            other => return Err(self.err(format!("APPEND to a {}", other.kind()))),
        }
        Ok(())
    }

    fn set_items(&mut self, items: Vec<PValue>) -> Result<()> {
        if items.len() % 2 != 0 {
            return Err(self.err("odd number of items for SETITEMS"));
        }
        let mut it = items.into_iter();
        match self.top()? {
            PValue::Dict(d) => {
                let mut d = d.borrow_mut();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.insert(k, v);
                }
            }
            PValue::Object(o) => {
                let mut o = o.borrow_mut();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    o.dict_items.push((k, v));
                }
            }
            other => return Err(self.err(format!("SETITEM on a {}", other.kind()))),
        }
        Ok(())
    }

    fn build(&mut self, state: PValue) -> Result<()> {
        match self.top()? {
            PValue::Object(o) => o.borrow_mut().state = Some(state),
            // OrderedDict's state is its `__dict__`, i.e. the `_metadata` of a state dict (module
            // versions for `_load_from_state_dict`), which a reader of tensors does not need.
            PValue::Dict(_) => {}
            // Tensor state (hooks, subclass attributes) carries no data, and the state of a
            // list/set/class subclass instance is attributes we have nowhere to keep; dropping
            // it lets the rest of a checkpoint load.
            PValue::Tensor(_)
            | PValue::List(_)
            | PValue::Set(_)
            | PValue::Tuple(_)
            | PValue::Global(_) => {}
            other => return Err(self.err(format!("BUILD on a {}", other.kind()))),
        }
        Ok(())
    }

    /// What calling `callable(*args, **kwargs)` gives, for the callables torch.save writes.
    fn call(
        &mut self,
        callable: PValue,
        args: Vec<PValue>,
        kwargs: Vec<(PValue, PValue)>,
    ) -> Result<PValue> {
        let PValue::Global(g) = &callable else {
            return Err(self.err(format!("cannot call a {}", callable.kind())));
        };
        let name = g.full();
        let v = match name.as_str() {
            "collections.OrderedDict" | "builtins.dict" => {
                let dict = PDict::default();
                let dict = Rc::new(RefCell::new(dict));
                // OrderedDict([(k, v), ...]) from protocol 0/1 pickles.
                if let Some(pairs) = args.first().and_then(PValue::sequence) {
                    for pair in pairs {
                        match pair.sequence().as_deref() {
                            Some([k, v]) => dict.borrow_mut().insert(k.clone(), v.clone()),
                            _ => {
                                return Err(self
                                    .err(format!("{name} item is a {}, not a pair", pair.kind())))
                            }
                        }
                    }
                }
                PValue::Dict(dict)
            }
            // The default factory is code; the items follow as SETITEMS.
            "collections.defaultdict" => PValue::Dict(Rc::default()),
            "builtins.set" | "builtins.frozenset" => {
                let items = args.first().and_then(PValue::sequence).unwrap_or_default();
                PValue::Set(Rc::new(RefCell::new(items)))
            }
            // Protocol 2 pickles `bytes` as `_codecs.encode(text, "latin1")`.
            "_codecs.encode" | "builtins.bytes" | "builtins.bytearray" => {
                match args.as_slice() {
                    [] => PValue::Bytes(Vec::new()),
                    [PValue::Bytes(b)] => PValue::Bytes(b.clone()),
                    [PValue::Str(s), PValue::Str(enc)] if enc == "latin1" || enc == "latin-1" => {
                        let bytes: Option<Vec<u8>> =
                            s.chars().map(|c| u8::try_from(c as u32).ok()).collect();
                        PValue::Bytes(bytes.ok_or_else(|| {
                            self.err("latin1 text with a character beyond U+00FF")
                        })?)
                    }
                    _ => opaque(name, args, kwargs),
                }
            }
            // `copyreg._reconstructor(cls, object, None)`: protocol 0/1 spelling of `cls.__new__`.
            "copyreg._reconstructor" => match args.first() {
                Some(PValue::Global(cls)) => opaque(cls.full(), Vec::new(), Vec::new()),
                _ => opaque(name, args, kwargs),
            },
            "torch.Size" => {
                let dims = args.first().and_then(PValue::sequence).unwrap_or_default();
                PValue::Tuple(Rc::new(dims))
            }
            // Tensor subclasses: (rebuild function, subclass, its arguments, instance state).
            "torch._tensor._rebuild_from_type_v2" => match args.as_slice() {
                [func, _new_type, inner, _state] => {
                    let inner = inner.sequence().ok_or_else(|| {
                        self.err("_rebuild_from_type_v2 arguments are not a tuple")
                    })?;
                    return self.call(func.clone(), inner, Vec::new());
                }
                _ => return Err(self.err("_rebuild_from_type_v2 needs 4 arguments")),
            },
            _ => match rebuild::call_torch(&name, &args) {
                Some(r) => r.map_err(|m| self.err(m))?,
                None => opaque(name, args, kwargs),
            },
        };
        Ok(v)
    }
}

fn global(module: String, name: String) -> PValue {
    // Python 2 module names, as Python 3's unpickler maps them (fix_imports).
    let module = match module.as_str() {
        "__builtin__" => "builtins".to_owned(),
        "copy_reg" => "copyreg".to_owned(),
        _ => module,
    };
    PValue::Global(Rc::new(Global { module, name }))
}

fn opaque(class: String, args: Vec<PValue>, kwargs: Vec<(PValue, PValue)>) -> PValue {
    PValue::Object(Rc::new(RefCell::new(PObject {
        class,
        args,
        kwargs,
        ..Default::default()
    })))
}

/// Runs a whole pickle held in memory (the zip format's `data.pkl`).
pub(crate) fn load_bytes(
    bytes: &[u8],
    path: &Path,
    context: &str,
    storages: &mut StorageTable,
) -> Result<PValue> {
    let mut reader = bytes;
    Unpickler::new(&mut reader, 0, path, context, storages).load()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<PValue> {
        let mut table = StorageTable::default();
        load_bytes(bytes, Path::new("test"), "test pickle", &mut table)
    }

    #[test]
    fn memo_shares_mutable_objects() {
        // [] memoised empty, then filled, then fetched again: both references see the items.
        // Python: l = [1, 2]; pickle.dumps((l, l), 2)
        let p = b"\x80\x02]q\x00(K\x01K\x02eh\x00\x86q\x01.";
        let PValue::Tuple(t) = run(p).unwrap() else {
            panic!()
        };
        let (PValue::List(a), PValue::List(b)) = (&t[0], &t[1]) else {
            panic!()
        };
        assert!(Rc::ptr_eq(a, b));
        assert_eq!(a.borrow().len(), 2);
    }

    #[test]
    fn text_opcodes_and_big_ints() {
        // Protocol 0: (I5\nI01\nF2.5\nL12L\nt.
        let PValue::Tuple(t) = run(b"(I5\nI01\nF2.5\nL12L\nt.").unwrap() else {
            panic!()
        };
        assert!(matches!(t[0], PValue::Int(5)));
        assert!(matches!(t[1], PValue::Bool(true)));
        assert!(matches!(t[2], PValue::Float(f) if f == 2.5));
        assert!(matches!(t[3], PValue::Int(12)));
        // LONG1 with 9 bytes: 2**64.
        let v = run(b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").unwrap();
        assert!(matches!(v, PValue::BigInt(ref b) if b.len() == 9));
        // LONG1 -1 as one byte.
        assert!(matches!(
            run(b"\x80\x02\x8a\x01\xff.").unwrap(),
            PValue::Int(-1)
        ));
    }

    #[test]
    fn errors_name_opcode_and_offset() {
        match run(b"\x80\x02\x82\x01.") {
            Err(Error::UnsupportedOpcode {
                opcode: 0x82,
                name: "EXT1",
                offset: 2,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run(b"\x80\x02X\x10\x00\x00\x00abc"),
            Err(Error::Truncated { .. })
        ));
        assert!(matches!(
            run(b"\x80\x02."),
            Err(Error::InvalidPickle { offset: 2, .. })
        ));
    }
}
