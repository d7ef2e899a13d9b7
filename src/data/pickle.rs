//! A reader of the protocol-2 pickles CIFAR-10's Python layout ships in: dicts, lists,
//! ints, strings and numpy uint8 arrays, nothing else.
//!
//! Why our own and not serde-pickle: serde-pickle resolves no globals, so numpy's
//! `_reconstruct(ndarray, …)` + BUILD either fails or, with its "replace unresolved
//! globals" option, becomes `None` and the array's bytes are lost; the bytes are the
//! whole point. These files use about thirty opcodes, all of them plain data, so a
//! stack machine that knows just those is short, adds no dependency, and can refuse
//! everything else. Nothing from a pickle is ever run: the only globals accepted are
//! numpy's array and dtype constructors and Python 3's `_codecs.encode` / `bytes` (how
//! protocol 2 spells bytes), each turned into a value here by hand; any other global
//! or opcode is an error.

use std::collections::HashMap;
use std::rc::Rc;

/// A value a pickle can hold, as far as CIFAR-10 needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Python 2 `str` or Python 3 `bytes` (shared: the memo holds a second handle).
    Bytes(Rc<[u8]>),
    Text(String),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Array(NdArray),
    /// A numpy dtype, by its type string (`u1`).
    Dtype(String),
    Global(Global),
    /// A memoised list, dict or array: later changes to it (appends, BUILD) cannot be
    /// followed, so fetching it back from the memo is refused rather than answered
    /// with a stale copy.
    SharedContainer,
}

/// A numpy array as pickled: shape, dtype string, element order and raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    pub shape: Vec<usize>,
    pub dtype: String,
    pub fortran_order: bool,
    pub data: Rc<[u8]>,
}

/// The globals a CIFAR-10 pickle names, and all this reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    Reconstruct,
    NdArrayType,
    DtypeType,
    CodecsEncode,
    BytesType,
}

impl Value {
    /// The entry of a dict under `key`, given as bytes (`b'data'`) or text (`'data'`).
    pub fn get(&self, key: &str) -> Option<&Value> {
        let Value::Dict(items) = self else { return None };
        items.iter().find(|(k, _)| k.as_str().as_deref() == Some(key)).map(|(_, v)| v)
    }

    /// Bytes or text as a string (bytes read as Latin-1, as Python 2 wrote them).
    pub fn as_str(&self) -> Option<String> {
        match self {
            Value::Text(s) => Some(s.clone()),
            Value::Bytes(b) => Some(b.iter().map(|&c| c as char).collect()),
            _ => None,
        }
    }

    /// A dict's keys as Python prints them, for error messages.
    pub fn key_list(&self) -> String {
        let Value::Dict(items) = self else { return "not a dict".into() };
        let keys: Vec<String> = items
            .iter()
            .map(|(k, _)| match k {
                Value::Bytes(_) => format!("b'{}'", k.as_str().unwrap_or_default()),
                other => format!("'{}'", other.as_str().unwrap_or_else(|| format!("{other:?}"))),
            })
            .collect();
        keys.join(", ")
    }
}

/// Reads one pickle; the error says what is wrong and at which byte.
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    Machine { bytes, at: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() }.run()
}

struct Machine<'a> {
    bytes: &'a [u8],
    at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl Machine<'_> {
    fn run(mut self) -> Result<Value, String> {
        loop {
            let start = self.at;
            let op = self.take(1)?[0];
            self.step(op).map_err(|e| format!("pickle opcode 0x{op:02x} at byte {start}: {e}"))?;
            if op == b'.' {
                return self.pop();
            }
        }
    }

    fn step(&mut self, op: u8) -> Result<(), String> {
        match op {
            // PROTO
            0x80 => {
                let protocol = self.take(1)?[0];
                if protocol > 3 {
                    return Err(format!(
                        "protocol {protocol}; this reader takes protocols 2 and 3 (CIFAR-10's files are 2)"
                    ));
                }
            }
            // STOP: `run` returns the value on top.
            b'.' => {}
            // MARK
            b'(' => self.marks.push(self.stack.len()),
            // EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE
            b'}' => self.stack.push(Value::Dict(Vec::new())),
            b']' => self.stack.push(Value::List(Vec::new())),
            b')' => self.stack.push(Value::Tuple(Vec::new())),
            // TUPLE, then TUPLE1..TUPLE3
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let items = self.pop_n(n)?;
                self.stack.push(Value::Tuple(items));
            }
            // APPEND, APPENDS
            b'a' => {
                let item = self.pop()?;
                self.list_mut()?.push(item);
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.list_mut()?.extend(items);
            }
            // SETITEM, SETITEMS
            b's' => {
                let pair = self.pop_n(2)?;
                self.dict_mut()?.push(pair_of(pair));
            }
            b'u' => {
                let items = self.pop_mark()?;
                if !items.len().is_multiple_of(2) {
                    return Err("SETITEMS with an odd number of items".into());
                }
                let mut items = items.into_iter();
                let dict = self.dict_mut()?;
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    dict.push((k, v));
                }
            }
            // NONE, NEWTRUE, NEWFALSE
            b'N' => self.stack.push(Value::None),
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            // BININT1, BININT2, BININT, LONG1, BINFLOAT
            b'K' => {
                let v = self.take(1)?[0];
                self.stack.push(Value::Int(v as i64));
            }
            b'M' => {
                let v = u16::from_le_bytes(self.array()?);
                self.stack.push(Value::Int(v as i64));
            }
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.stack.push(Value::Int(v as i64));
            }
            0x8a => {
                let n = self.take(1)?[0] as usize;
                let v = long(self.take(n)?)?;
                self.stack.push(Value::Int(v));
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.stack.push(Value::Float(v));
            }
            // SHORT_BINSTRING (Python 2 str), SHORT_BINBYTES; BINSTRING, BINBYTES; BINUNICODE
            b'U' | b'C' => {
                let n = self.take(1)?[0] as usize;
                let v = Value::Bytes(self.take(n)?.into());
                self.stack.push(v);
            }
            b'T' | b'B' => {
                let n = self.length()?;
                let v = Value::Bytes(self.take(n)?.into());
                self.stack.push(v);
            }
            b'X' => {
                let n = self.length()?;
                let text =
                    std::str::from_utf8(self.take(n)?).map_err(|e| format!("text that is not UTF-8: {e}"))?.to_string();
                self.stack.push(Value::Text(text));
            }
            // BINPUT, LONG_BINPUT, BINGET, LONG_BINGET: a memo key of one or four bytes.
            b'q' | b'r' | b'h' | b'j' => {
                let key =
                    if matches!(op, b'q' | b'h') { self.take(1)?[0] as u32 } else { u32::from_le_bytes(self.array()?) };
                if matches!(op, b'q' | b'r') { self.memoise(key)? } else { self.fetch(key)? }
            }
            // GLOBAL, REDUCE, BUILD
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.stack.push(Value::Global(global(&module, &name)?));
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                self.stack.push(reduce(callable, args)?);
            }
            b'b' => {
                let state = self.pop()?;
                let object = self.pop()?;
                self.stack.push(build(object, state)?);
            }
            _ => return Err("not an opcode this reader knows (it reads protocol-2 data pickles only)".into()),
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or("the pickle ends early")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn length(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.at..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or("the pickle ends early")?;
        let line = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.at += end + 1;
        Ok(line)
    }

    fn pop(&mut self) -> Result<Value, String> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err("the stack is empty above its mark".into());
        }
        self.stack.pop().ok_or_else(|| "the stack is empty".into())
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Value>, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return Err(format!("needs {n} values on the stack"));
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or("no mark on the stack")?;
        Ok(self.stack.split_off(mark))
    }

    fn list_mut(&mut self) -> Result<&mut Vec<Value>, String> {
        match self.stack.last_mut() {
            Some(Value::List(items)) => Ok(items),
            _ => Err("appends to something that is not a list".into()),
        }
    }

    fn dict_mut(&mut self) -> Result<&mut Vec<(Value, Value)>, String> {
        match self.stack.last_mut() {
            Some(Value::Dict(items)) => Ok(items),
            _ => Err("sets an item of something that is not a dict".into()),
        }
    }

    fn memoise(&mut self, key: u32) -> Result<(), String> {
        let top = self.stack.last().ok_or("memoises an empty stack")?;
        let kept = match top {
            Value::List(_) | Value::Dict(_) | Value::Array(_) => Value::SharedContainer,
            other => other.clone(),
        };
        self.memo.insert(key, kept);
        Ok(())
    }

    fn fetch(&mut self, key: u32) -> Result<(), String> {
        match self.memo.get(&key) {
            None => Err(format!("memo entry {key} was never stored")),
            Some(Value::SharedContainer) => Err(format!("memo entry {key} is a shared list or dict")),
            Some(v) => {
                self.stack.push(v.clone());
                Ok(())
            }
        }
    }
}

fn pair_of(mut pair: Vec<Value>) -> (Value, Value) {
    let v = pair.pop().expect("two values");
    let k = pair.pop().expect("two values");
    (k, v)
}

/// LONG1's little-endian two's-complement integer.
fn long(bytes: &[u8]) -> Result<i64, String> {
    if bytes.len() > 8 {
        return Err(format!("an integer of {} bytes", bytes.len()));
    }
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut buf = [if negative { 0xff } else { 0 }; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    Ok(i64::from_le_bytes(buf))
}

fn global(module: &str, name: &str) -> Result<Global, String> {
    Ok(match (module, name) {
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => Global::Reconstruct,
        ("numpy", "ndarray") => Global::NdArrayType,
        ("numpy", "dtype") => Global::DtypeType,
        ("_codecs", "encode") => Global::CodecsEncode,
        ("__builtin__" | "builtins", "bytes") => Global::BytesType,
        _ => return Err(format!("refuses the global {module}.{name}: only numpy arrays are read, nothing is run")),
    })
}

/// What calling one of the accepted globals gives, built here without running anything.
fn reduce(callable: Value, args: Value) -> Result<Value, String> {
    let Value::Tuple(args) = args else { return Err("REDUCE's arguments are not a tuple".into()) };
    match (callable, args.as_slice()) {
        (Value::Global(Global::Reconstruct), [Value::Global(Global::NdArrayType), ..]) => {
            Ok(Value::Array(NdArray { shape: vec![0], dtype: String::new(), fortran_order: false, data: Rc::new([]) }))
        }
        (Value::Global(Global::DtypeType), [typestr, ..]) => {
            Ok(Value::Dtype(typestr.as_str().ok_or("a dtype without a type string")?))
        }
        // Python 3's protocol 2 writes bytes as _codecs.encode(text, 'latin1').
        (Value::Global(Global::CodecsEncode), [Value::Text(text), encoding]) => {
            if !matches!(encoding.as_str().as_deref(), Some("latin1" | "latin-1")) {
                return Err(format!("_codecs.encode with the encoding {encoding:?}"));
            }
            let bytes: Option<Vec<u8>> = text.chars().map(|c| u8::try_from(c as u32).ok()).collect();
            Ok(Value::Bytes(bytes.ok_or("latin1 text with a character above 255")?.into()))
        }
        (Value::Global(Global::BytesType), []) => Ok(Value::Bytes(Rc::new([]))),
        (callable, args) => Err(format!("refuses to call {callable:?} with {} arguments", args.len())),
    }
}

/// numpy's `__setstate__`: (version, shape, dtype, is_fortran, raw bytes).
fn build(object: Value, state: Value) -> Result<Value, String> {
    match (object, state) {
        (Value::Array(_), Value::Tuple(state)) => {
            let fields = match state.as_slice() {
                [Value::Int(1), rest @ ..] | rest @ [_, _, _, _] => rest,
                _ => return Err("an ndarray state that is not (version, shape, dtype, order, data)".into()),
            };
            let [Value::Tuple(shape), Value::Dtype(dtype), fortran_order, Value::Bytes(data)] = fields else {
                return Err("an ndarray state that is not (shape, dtype, order, bytes)".into());
            };
            // Python 2 may write the order flag as 0/1 rather than False/True.
            let fortran_order = matches!(fortran_order, Value::Bool(true) | Value::Int(1));
            let shape: Option<Vec<usize>> =
                shape.iter().map(|d| if let Value::Int(d) = d { usize::try_from(*d).ok() } else { None }).collect();
            let shape = shape.ok_or("an ndarray shape that is not a tuple of sizes")?;
            Ok(Value::Array(NdArray { shape, dtype: dtype.clone(), fortran_order, data: data.clone() }))
        }
        // A dtype's state (byte order, fields) changes nothing for one-byte integers.
        (dtype @ Value::Dtype(_), _) => Ok(dtype),
        (object, _) => Err(format!("refuses to set the state of {object:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data batch as Python 2's cPickle wrote CIFAR-10's files (protocol 2, `str` keys,
    /// the array's bytes in one BINSTRING), two images of three pixels.
    const PYTHON2_BATCH: &[u8] = b"\x80\x02}q\x01(U\x04dataq\x02cnumpy.core.multiarray\n_reconstruct\nq\x03\
cnumpy\nndarray\nq\x04K\x00\x85U\x01b\x87Rq\x05(K\x01K\x02K\x03\x86cnumpy\ndtype\nq\x06U\x02u1K\x00K\x01\x87Rq\x07\
(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T\x06\x00\x00\x00\x00\x01\x02\xfd\xfe\xfftbU\x06labels\
]q\x08(K\x07M\x2c\x01eu.";

    #[test]
    fn a_python2_cifar_batch_gives_its_array_bytes_and_labels() {
        let batch = parse(PYTHON2_BATCH).unwrap();
        let Some(Value::Array(data)) = batch.get("data") else { panic!("no array: {batch:?}") };
        assert_eq!(data.shape, vec![2, 3]);
        assert_eq!(data.dtype, "u1");
        assert!(!data.fortran_order);
        assert_eq!(&data.data[..], &[0, 1, 2, 253, 254, 255]);
        assert_eq!(batch.get("labels"), Some(&Value::List(vec![Value::Int(7), Value::Int(300)])));
        assert_eq!(batch.key_list(), "b'data', b'labels'");
    }

    #[test]
    fn any_other_global_is_refused_and_nothing_runs() {
        let err = parse(b"\x80\x02cos\nsystem\nq\x00U\x02lsq\x01\x85R.").unwrap_err();
        assert!(err.contains("refuses the global os.system"), "{err}");
        assert!(err.contains("at byte 2"), "{err}");
        let err = parse(b"\x80\x04\x95").unwrap_err();
        assert!(err.contains("protocol 4"), "{err}");
        assert!(parse(b"\x80\x02}q\x01(U\x04data").unwrap_err().contains("ends early"));
    }
}
