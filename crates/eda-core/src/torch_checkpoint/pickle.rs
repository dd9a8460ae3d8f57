//! The pickle side of a `torch.save` state dict: a writer for a flat `OrderedDict` of tensors
//! (protocol 2, exactly the opcodes `torch.save` emits, all of them allowed by
//! `torch.load(weights_only=True)`), and a small reader: a pickle machine that knows the
//! opcodes of protocols 2 to 4 and the few globals a state dict uses
//! (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`, the
//! `torch.*Storage` classes). Anything else is kept as an opaque object and only refused if a
//! tensor is expected there, so nothing in a checkpoint is ever executed.

use std::collections::HashMap;

/// A tensor of a state dict, as the pickle describes it: which storage record holds its bytes
/// and how it views them.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TensorView {
    /// `torch.FloatStorage`, `torch.HalfStorage`, ...: the element type.
    pub(super) storage_type: String,
    /// Record key: the bytes are in `<prefix>/data/<key>`.
    pub(super) key: String,
    /// Offset into the storage, in elements.
    pub(super) offset: usize,
    pub(super) size: Vec<usize>,
    pub(super) stride: Vec<usize>,
}

/// What a pickle evaluates to (the subset a state dict needs).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Storage {
        storage_type: String,
        key: String,
    },
    Tensor(TensorView),
    /// The result of calling a global this reader does not model.
    Object(String),
    Mark,
}

/// Writes the pickle of an `OrderedDict` mapping each name to a tensor stored in record
/// `key = index` with `storage_type` and `shape` (contiguous, offset 0).
pub(super) fn write_state_dict(entries: &[(&str, &str, &[usize])]) -> Vec<u8> {
    let mut p = vec![0x80, 2]; // PROTO 2
    global(&mut p, "collections", "OrderedDict");
    p.push(b')'); // EMPTY_TUPLE
    p.push(b'R'); // REDUCE
    if !entries.is_empty() {
        p.push(b'('); // MARK
        for (i, (name, storage_type, shape)) in entries.iter().enumerate() {
            unicode(&mut p, name);
            global(&mut p, "torch._utils", "_rebuild_tensor_v2");
            p.push(b'(');
            // Persistent id: ('storage', <class>, key, location, numel).
            p.push(b'(');
            unicode(&mut p, "storage");
            global(&mut p, "torch", storage_type);
            unicode(&mut p, &i.to_string());
            unicode(&mut p, "cpu");
            int(&mut p, shape.iter().product::<usize>() as u64);
            p.push(b't'); // TUPLE
            p.push(b'Q'); // BINPERSID
            int(&mut p, 0); // storage offset
            p.push(b'(');
            shape.iter().for_each(|&d| int(&mut p, d as u64));
            p.push(b't');
            p.push(b'(');
            let mut stride = 1u64;
            let mut strides: Vec<u64> = shape
                .iter()
                .rev()
                .map(|&d| {
                    let s = stride;
                    stride *= d as u64;
                    s
                })
                .collect();
            strides.reverse();
            strides.iter().for_each(|&s| int(&mut p, s));
            p.push(b't');
            p.push(0x89); // NEWFALSE: requires_grad
            global(&mut p, "collections", "OrderedDict"); // backward hooks
            p.push(b')');
            p.push(b'R');
            p.push(b't');
            p.push(b'R');
        }
        p.push(b'u'); // SETITEMS
    }
    p.push(b'.'); // STOP
    p
}

fn global(p: &mut Vec<u8>, module: &str, name: &str) {
    p.push(b'c');
    p.extend_from_slice(module.as_bytes());
    p.push(b'\n');
    p.extend_from_slice(name.as_bytes());
    p.push(b'\n');
}

fn unicode(p: &mut Vec<u8>, s: &str) {
    p.push(b'X'); // BINUNICODE
    p.extend_from_slice(&(s.len() as u32).to_le_bytes());
    p.extend_from_slice(s.as_bytes());
}

fn int(p: &mut Vec<u8>, v: u64) {
    if v < 0x100 {
        p.extend_from_slice(&[b'K', v as u8]); // BININT1
    } else if v < 0x1_0000 {
        p.push(b'M'); // BININT2
        p.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v < 0x8000_0000 {
        p.push(b'J'); // BININT (signed 32-bit)
        p.extend_from_slice(&(v as u32).to_le_bytes());
    } else {
        p.extend_from_slice(&[0x8a, 8]); // LONG1, 8 bytes, two's complement
        p.extend_from_slice(&v.to_le_bytes());
    }
}

/// Runs the pickle in `bytes` and returns the value it builds. Errors are plain messages.
pub(super) fn read(bytes: &[u8]) -> Result<Value, String> {
    let mut m = Machine { bytes, pos: 0, stack: Vec::new(), memo: HashMap::new() };
    m.run()
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or("pickle is truncated")?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or("pickle is truncated (unterminated line)")?;
        let s = String::from_utf8(rest[..n].to_vec()).map_err(|_| "non-UTF-8 name in pickle")?;
        self.pos += n + 1;
        Ok(s)
    }

    fn text(&mut self, n: usize) -> Result<String, String> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "non-UTF-8 string in pickle".to_string())
    }

    fn pop(&mut self) -> Result<Value, String> {
        self.stack.pop().ok_or_else(|| "pickle stack underflow".to_string())
    }

    /// Pops everything above the topmost mark (and the mark).
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let at = self.stack.iter().rposition(|v| *v == Value::Mark).ok_or("pickle has no mark")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack.last_mut().ok_or_else(|| "pickle stack underflow".to_string())
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Value::Mark),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v.into()))
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v.into()))
                }
                0x8a => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(format!("integer of {n} bytes at byte {at}"));
                    }
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)))
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8"));
                    self.stack.push(Value::Float(v))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.text(n)?;
                    self.stack.push(Value::Str(s))
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let s = self.text(n)?;
                    self.stack.push(Value::Str(s))
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.take(8)?.try_into().expect("8"));
                    let s = self.text(usize::try_from(n).map_err(|_| "string too long")?)?;
                    self.stack.push(Value::Str(s))
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b'U' | b'C' => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err("pickle stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items))
                }
                b']' => self.stack.push(Value::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items))
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(pairs(items)?))
                }
                b'a' => {
                    let v = self.pop()?;
                    if let Value::List(l) = self.top()? {
                        l.push(v)
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    if let Value::List(l) = self.top()? {
                        l.extend(items)
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.push((k, v)),
                        other => return Err(format!("SETITEM on {} at byte {at}", kind(other))),
                    }
                }
                b'u' => {
                    let items = pairs(self.pop_mark()?)?;
                    match self.top()? {
                        Value::Dict(d) => d.extend(items),
                        other => return Err(format!("SETITEMS on {} at byte {at}", kind(other))),
                    }
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err(format!("STACK_GLOBAL without strings at byte {at}")),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(callable, args)?;
                    self.stack.push(v)
                }
                0x81 => {
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    self.stack.push(Value::Object(describe(&cls)))
                }
                b'b' => {
                    // BUILD sets an object's state; a state dict's `_metadata` is not needed.
                    self.pop()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(storage(pid)?)
                }
                b'q' => {
                    let i = self.u8()?.into();
                    self.memoize(i)?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memoize(i)?
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memoize(i)?
                }
                b'h' => {
                    let i = self.u8()?.into();
                    self.recall(i)?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.recall(i)?
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v)
                }
                _ => return Err(format!("unsupported pickle opcode 0x{op:02x} at byte {at}")),
            }
        }
    }

    fn memoize(&mut self, i: u32) -> Result<(), String> {
        let v = self.top()?.clone();
        self.memo.insert(i, v);
        Ok(())
    }

    fn recall(&mut self, i: u32) -> Result<(), String> {
        let v = self.memo.get(&i).cloned().ok_or_else(|| format!("pickle memo entry {i} is missing"))?;
        self.stack.push(v);
        Ok(())
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of items for a dictionary".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn kind(v: &Value) -> String {
    match v {
        Value::Object(what) => what.clone(),
        other => format!("{other:?}").chars().take(40).collect(),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Global(m, n) => format!("{m}.{n}"),
        other => kind(other),
    }
}

/// `('storage', <storage class>, key, location, numel)` → a storage reference.
fn storage(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else { return Err("persistent id is not a tuple".into()) };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(module, class), Value::Str(key), ..] if tag == "storage" && module == "torch" => {
            Ok(Value::Storage { storage_type: class.clone(), key: key.clone() })
        }
        _ => Err(format!("unsupported persistent id {items:?}")),
    }
}

fn usize_of(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|_| format!("negative {what}")),
        other => Err(format!("{what} is {}, not an integer", kind(other))),
    }
}

fn usizes(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => items.iter().map(|x| usize_of(x, what)).collect(),
        other => Err(format!("{what} is {}, not a tuple", kind(other))),
    }
}

/// Calls `callable(*args)` for the globals a state dict uses.
fn reduce(callable: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = &callable else { return Ok(Value::Object(describe(&callable))) };
    let args = match args {
        Value::Tuple(a) => a,
        other => return Err(format!("arguments of {module}.{name} are {}, not a tuple", kind(&other))),
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") if args.is_empty() => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
            let [Value::Storage { storage_type, key }, offset, size, stride, ..] = args.as_slice() else {
                return Err(format!("{module}.{name} called with unexpected arguments"));
            };
            Ok(Value::Tensor(TensorView {
                storage_type: storage_type.clone(),
                key: key.clone(),
                offset: usize_of(offset, "storage offset")?,
                size: usizes(size, "tensor size")?,
                stride: usizes(stride, "tensor stride")?,
            }))
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err(format!("{module}.{name} without a tensor")),
        },
        _ => Ok(Value::Object(format!("{module}.{name}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_state_dict_reads_back() {
        let shape_a = [2usize, 3];
        let shape_b = [70_000usize];
        let p = write_state_dict(&[("a.weight", "FloatStorage", &shape_a), ("b", "HalfStorage", &shape_b)]);
        let Value::Dict(items) = read(&p).unwrap() else { panic!("not a dict") };
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].0, Value::Str("a.weight".into()));
        let Value::Tensor(t) = &items[0].1 else { panic!("not a tensor") };
        assert_eq!((t.storage_type.as_str(), t.key.as_str(), t.offset), ("FloatStorage", "0", 0));
        assert_eq!((t.size.clone(), t.stride.clone()), (vec![2, 3], vec![3, 1]));
        let Value::Tensor(t) = &items[1].1 else { panic!("not a tensor") };
        assert_eq!((t.storage_type.as_str(), t.key.as_str(), t.size.clone()), ("HalfStorage", "1", vec![70_000]));
    }

    #[test]
    fn large_and_negative_integers_decode() {
        let mut p = vec![0x80, 2];
        int(&mut p, 5_000_000_000);
        p.extend_from_slice(&[0x8a, 1, 0xff]); // LONG1 -1
        p.extend_from_slice(&[0x86, b'.']);
        assert_eq!(read(&p).unwrap(), Value::Tuple(vec![Value::Int(5_000_000_000), Value::Int(-1)]));
    }

    #[test]
    fn truncated_or_unknown_pickles_are_errors() {
        let p = write_state_dict(&[("w", "FloatStorage", &[4])]);
        for cut in [1, 5, p.len() / 2, p.len() - 1] {
            assert!(read(&p[..cut]).is_err(), "cut at {cut}");
        }
        assert!(read(&[0x80, 2, 0xfe]).unwrap_err().contains("opcode"));
    }
}
