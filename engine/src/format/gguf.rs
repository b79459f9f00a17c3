//! GGUF reader (versions 2 and 3, little-endian): metadata key/values of every type,
//! tensor infos and the aligned data section. Every count and offset is checked against
//! the file size before anything is allocated or read, so a corrupt file gives an
//! [`Error`] naming the byte offset, never a panic or an out-of-bounds read.

use super::read_file::{read_sealed, LoadMethod, LoadOptions};
use crate::model::Bytes;
use crate::{Error, Result};
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Dimensions a ggml tensor may have.
pub const MAX_DIMS: usize = 4;
/// Deepest array nesting accepted in metadata.
pub const MAX_ARRAY_DEPTH: u32 = 4;

/// ggml tensor type ids this engine knows the storage size of.
pub mod ty {
    pub const F32: u32 = 0;
    pub const F16: u32 = 1;
    pub const Q4_0: u32 = 2;
    pub const Q4_1: u32 = 3;
    pub const Q5_0: u32 = 6;
    pub const Q5_1: u32 = 7;
    pub const Q8_0: u32 = 8;
    pub const Q8_1: u32 = 9;
    pub const Q2_K: u32 = 10;
    pub const Q3_K: u32 = 11;
    pub const Q4_K: u32 = 12;
    pub const Q5_K: u32 = 13;
    pub const Q6_K: u32 = 14;
    pub const Q8_K: u32 = 15;
    pub const I8: u32 = 24;
    pub const I16: u32 = 25;
    pub const I32: u32 = 26;
    pub const I64: u32 = 27;
    pub const F64: u32 = 28;
    pub const BF16: u32 = 30;
    pub const TQ1_0: u32 = 34;
    pub const TQ2_0: u32 = 35;
    /// bitnet.cpp's fork: 2-bit codes in 128-element blocks plus one f32 tensor scale.
    pub const I2_S: u32 = 36;
    /// onebit's Sherry 3:4 sparse ternary (`onebit_kernels::sherry`): rows of 20-byte
    /// groups per 128 weights, then the f32 tensor scale padded to 32 bytes, as I2_S. The id
    /// ("SH" in ASCII) lies far above every id ggml (0–39), bitnet.cpp (36–38) and
    /// ik_llama.cpp (below 1000) assign, so no other reader mistakes it for its own type.
    pub const SHERRY: u32 = 0x5348;
}

/// Name of a ggml type id (for messages), `None` if unknown.
pub fn type_name(t: u32) -> Option<&'static str> {
    Some(match t {
        ty::F32 => "F32",
        ty::F16 => "F16",
        ty::Q4_0 => "Q4_0",
        ty::Q4_1 => "Q4_1",
        ty::Q5_0 => "Q5_0",
        ty::Q5_1 => "Q5_1",
        ty::Q8_0 => "Q8_0",
        ty::Q8_1 => "Q8_1",
        ty::Q2_K => "Q2_K",
        ty::Q3_K => "Q3_K",
        ty::Q4_K => "Q4_K",
        ty::Q5_K => "Q5_K",
        ty::Q6_K => "Q6_K",
        ty::Q8_K => "Q8_K",
        ty::I8 => "I8",
        ty::I16 => "I16",
        ty::I32 => "I32",
        ty::I64 => "I64",
        ty::F64 => "F64",
        ty::BF16 => "BF16",
        ty::TQ1_0 => "TQ1_0",
        ty::TQ2_0 => "TQ2_0",
        ty::I2_S => "I2_S",
        ty::SHERRY => "SHERRY",
        _ => return None,
    })
}

/// (elements per block, bytes per block) of a block-structured type.
fn block_size(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        ty::F32 | ty::I32 => (1, 4),
        ty::F16 | ty::BF16 | ty::I16 => (1, 2),
        ty::I8 => (1, 1),
        ty::I64 | ty::F64 => (1, 8),
        ty::Q4_0 => (32, 18),
        ty::Q4_1 => (32, 20),
        ty::Q5_0 => (32, 22),
        ty::Q5_1 => (32, 24),
        ty::Q8_0 => (32, 34),
        ty::Q8_1 => (32, 36),
        ty::Q2_K => (256, 84),
        ty::Q3_K => (256, 110),
        ty::Q4_K => (256, 144),
        ty::Q5_K => (256, 176),
        ty::Q6_K => (256, 210),
        ty::Q8_K => (256, 292),
        ty::TQ1_0 => (256, 54),
        ty::TQ2_0 => (256, 66),
        _ => return None,
    })
}

/// Bytes a tensor of type `t` with `ne0` contiguous elements and `n` elements in all
/// occupies, or why that cannot be computed.
pub fn tensor_bytes(t: u32, ne0: u64, n: u64) -> std::result::Result<u64, String> {
    if t == ty::I2_S {
        // The fork stores n/4 bytes of codes, then the f32 scale padded to 32 bytes.
        if !n.is_multiple_of(128) {
            return Err(format!("I2_S needs a multiple of 128 elements, has {n}"));
        }
        return Ok(n / 4 + 32);
    }
    if t == ty::SHERRY {
        if ne0 == 0 || !n.is_multiple_of(ne0) {
            return Err(format!("SHERRY: {n} elements are not whole rows of {ne0}"));
        }
        let row = onebit_kernels::sherry::row_bytes(ne0 as usize) as u64;
        return (n / ne0)
            .checked_mul(row)
            .and_then(|b| b.checked_add(32))
            .ok_or_else(|| "tensor size overflows".to_string());
    }
    let Some((be, bb)) = block_size(t) else {
        return Err(format!("unknown ggml tensor type id {t}"));
    };
    if !ne0.is_multiple_of(be) {
        return Err(format!(
            "row length {ne0} is not a multiple of the {} block of {be}",
            type_name(t).unwrap_or("?")
        ));
    }
    (n / be)
        .checked_mul(bb)
        .ok_or_else(|| "tensor size overflows".to_string())
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// GGUF value type id.
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// Any integer type that fits in u64 (negative values give None).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short rendering for logs and `onebit info` (arrays show their length).
    pub fn summary(&self) -> String {
        match self {
            Value::String(s) if s.chars().count() > 80 => {
                format!("{:?}…", s.chars().take(80).collect::<String>())
            }
            Value::String(s) => format!("{s:?}"),
            Value::Array(a) => format!("[{} items]", a.len()),
            Value::Bool(b) => b.to_string(),
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            other => other.as_i64().map(|v| v.to_string()).unwrap_or_default(),
        }
    }
}

/// One tensor's description from the header.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (innermost) dimension.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset relative to the data section, as stored.
    pub rel_offset: u64,
    /// Absolute offset of the data in the file.
    pub offset: u64,
    pub size: u64,
    /// Where this tensor's info record starts in the header (for messages).
    pub info_offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    pub fn type_name(&self) -> String {
        type_name(self.ggml_type)
            .map(str::to_string)
            .unwrap_or_else(|| format!("type {}", self.ggml_type))
    }
}

/// A parsed GGUF file over its bytes (mapped, static or owned).
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    bytes: Bytes,
    kv: Vec<(String, Value)>,
    kv_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("kv", &self.kv.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Bounds-checked little-endian cursor that reports errors at the current offset.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: impl Into<String>) -> Error {
        Error::corrupt(self.path, self.pos as u64, what)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(format!(
                "file ends inside {what} (needs {n} bytes, {} left)",
                self.buf.len() - self.pos.min(self.buf.len())
            ))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos.min(self.buf.len())) as u64
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(Error::corrupt(
                self.path,
                at as u64,
                format!(
                    "{what}: string length {len} exceeds the {} bytes left in the file",
                    self.remaining()
                ),
            ));
        }
        let s = self.take(len as usize, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| {
            Error::corrupt(
                self.path,
                at as u64,
                format!("{what}: string is not valid UTF-8"),
            )
        })
    }

    fn value(&mut self, t: u32, what: &str, depth: u32) -> Result<Value> {
        Ok(match t {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(self.array::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => {
                let b = self.array::<1>(what)?[0];
                if b > 1 {
                    return Err(Error::corrupt(
                        self.path,
                        self.pos as u64 - 1,
                        format!("{what}: bool byte {b}"),
                    ));
                }
                Value::Bool(b == 1)
            }
            8 => Value::String(self.string(what)?),
            9 => {
                // The format allows arrays of arrays; bound the nesting so a hostile file
                // cannot recurse deeply.
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!(
                        "{what}: arrays nested more than {MAX_ARRAY_DEPTH} deep"
                    )));
                }
                let at = self.pos;
                let et = self.u32(what)?;
                let n = self.u64(what)?;
                let min = match et {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    // element type + count of an inner array
                    9 => 12,
                    _ => {
                        return Err(Error::corrupt(
                            self.path,
                            at as u64,
                            format!("{what}: unknown array element type {et}"),
                        ))
                    }
                };
                // Cap the allocation by what the file can hold.
                if n.checked_mul(min).is_none_or(|b| b > self.remaining()) {
                    return Err(Error::corrupt(
                        self.path,
                        at as u64,
                        format!(
                            "{what}: array of {n} elements cannot fit in the {} bytes left",
                            self.remaining()
                        ),
                    ));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(et, what, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            _ => return Err(self.err(format!("{what}: unknown metadata value type {t}"))),
        })
    }
}

impl GgufFile {
    /// Memory-maps and parses a GGUF file (the tensors are windows of its page cache).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_mapped(path)
    }

    /// Loads a GGUF file as `o` says (into a sealed memfd, or mapped) and parses it.
    pub fn open_with(path: &Path, o: &LoadOptions) -> Result<Self> {
        if o.method == LoadMethod::Mmap {
            return Self::open_mapped(path);
        }
        let (sealed, _) = read_sealed(path, o.method, &o.io)?;
        Self::parse(path, Bytes::sealed(Arc::new(sealed)))
    }

    fn open_mapped(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is read-only and private to this process; onebit never writes
        // model files while they are loaded. A concurrent truncation by another process
        // would raise SIGBUS, which is the documented hazard of mapping any file.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let len = map.len();
        let bytes = Bytes::mapped(&Arc::new(map), 0, len)
            .ok_or_else(|| Error::corrupt(path, 0, "cannot map"))?;
        Self::parse(path, bytes)
    }

    /// Parses GGUF from bytes already in memory (mapped, static or owned).
    pub fn parse(path: impl Into<PathBuf>, bytes: Bytes) -> Result<Self> {
        let path = path.into();
        let buf = bytes.as_slice();
        let mut c = Cursor {
            buf,
            pos: 0,
            path: &path,
        };
        let magic = c.take(4, "the magic")?;
        if magic != MAGIC {
            return Err(Error::corrupt(
                &path,
                0,
                format!("wrong magic {magic:02x?} (a GGUF file starts with \"GGUF\")"),
            ));
        }
        let version = c.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::corrupt(
                &path,
                4,
                format!("GGUF version {version} is not supported (only 2 and 3; re-convert with a current converter)"),
            ));
        }
        let n_tensors = c.u64("the tensor count")?;
        let n_kv = c.u64("the metadata count")?;
        // Each KV takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info
        // at least 8 + 4 + 8 + 4 + 8.
        if n_kv.saturating_mul(13) > c.remaining() {
            return Err(Error::corrupt(
                &path,
                16,
                format!("metadata count {n_kv} cannot fit in the file"),
            ));
        }
        if n_tensors.saturating_mul(32) > c.remaining() {
            return Err(Error::corrupt(
                &path,
                8,
                format!("tensor count {n_tensors} cannot fit in the file"),
            ));
        }
        let mut kv = Vec::with_capacity(n_kv as usize);
        let mut kv_index = HashMap::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let at = c.pos as u64;
            let key = c.string("a metadata key")?;
            let t = c.u32("a metadata type")?;
            let v = c.value(t, &format!("metadata '{key}'"), 0)?;
            if kv_index.insert(key.clone(), kv.len()).is_some() {
                return Err(Error::corrupt(
                    &path,
                    at,
                    format!("metadata key '{key}' appears twice"),
                ));
            }
            kv.push((key, v));
        }
        let alignment = match kv_index.get("general.alignment").map(|&i| &kv[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 20 => a,
                _ => {
                    return Err(Error::corrupt(
                        &path,
                        0,
                        format!(
                            "general.alignment {} is not a power of two up to 1 MiB",
                            v.summary()
                        ),
                    ))
                }
            },
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let info_offset = c.pos as u64;
            let name = c.string("a tensor name")?;
            let nd = c.u32("a tensor's dimension count")?;
            if nd == 0 || nd as usize > MAX_DIMS {
                return Err(Error::corrupt(
                    &path,
                    info_offset,
                    format!("tensor '{name}' has {nd} dimensions (1 to {MAX_DIMS} allowed)"),
                ));
            }
            let mut dims = Vec::with_capacity(nd as usize);
            for _ in 0..nd {
                dims.push(c.u64("a tensor dimension")?);
            }
            let ggml_type = c.u32("a tensor type")?;
            let rel_offset = c.u64("a tensor offset")?;
            let n = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d).filter(|_| d > 0));
            let Some(n) = n.filter(|&n| n < 1 << 48) else {
                return Err(Error::corrupt(
                    &path,
                    info_offset,
                    format!("tensor '{name}' has impossible dimensions {dims:?}"),
                ));
            };
            let size = tensor_bytes(ggml_type, dims[0], n)
                .map_err(|e| Error::corrupt(&path, info_offset, format!("tensor '{name}': {e}")))?;
            if rel_offset % alignment != 0 {
                return Err(Error::corrupt(
                    &path,
                    info_offset,
                    format!(
                        "tensor '{name}' data offset {rel_offset} is not aligned to {alignment}"
                    ),
                ));
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(Error::corrupt(
                    &path,
                    info_offset,
                    format!("tensor '{name}' appears twice"),
                ));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                rel_offset,
                offset: 0,
                size,
                info_offset,
            });
        }
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = buf.len() as u64;
        for t in &mut tensors {
            let end = data_offset
                .checked_add(t.rel_offset)
                .and_then(|o| o.checked_add(t.size).map(|e| (o, e)));
            match end {
                Some((o, e)) if e <= file_len => t.offset = o,
                _ => {
                    return Err(Error::corrupt(
                        &path,
                        t.info_offset,
                        format!(
                            "tensor '{}' data ({} bytes at data offset {}) lies beyond the end of the file ({file_len} bytes): the file is truncated",
                            t.name, t.size, t.rel_offset
                        ),
                    ))
                }
            }
        }
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| tensors[i].offset);
        for w in order.windows(2) {
            let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
            if a.offset + a.size > b.offset {
                return Err(Error::corrupt(
                    &path,
                    b.info_offset,
                    format!("tensor '{}' data overlaps tensor '{}'", b.name, a.name),
                ));
            }
        }
        Ok(Self {
            path,
            version,
            alignment,
            data_offset,
            bytes,
            kv,
            kv_index,
            tensors,
            tensor_index,
        })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv_index.get(key).map(|&i| &self.kv[i].1)
    }

    /// All metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.kv
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor (zero-copy for mapped and static files).
    pub fn tensor_data(&self, t: &TensorInfo) -> Result<Bytes> {
        self.bytes
            .slice(t.offset as usize, t.size as usize)
            .ok_or_else(|| {
                Error::corrupt(
                    &self.path,
                    t.offset,
                    format!("tensor '{}' lies outside the file", t.name),
                )
            })
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// A required string key.
    pub fn str_key(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            Some(v) => v.as_str().ok_or_else(|| self.bad_key(key, "a string", v)),
            None => Err(self.missing(key)),
        }
    }

    /// A required non-negative integer key.
    pub fn u64_key(&self, key: &str) -> Result<u64> {
        match self.get(key) {
            Some(v) => v
                .as_u64()
                .ok_or_else(|| self.bad_key(key, "a non-negative integer", v)),
            None => Err(self.missing(key)),
        }
    }

    /// An optional numeric key.
    pub fn f64_key(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad_key(key, "a number", v)),
            None => Ok(None),
        }
    }

    fn missing(&self, key: &str) -> Error {
        Error::corrupt(&self.path, 0, format!("metadata key '{key}' is missing"))
    }

    fn bad_key(&self, key: &str, want: &str, v: &Value) -> Error {
        Error::corrupt(
            &self.path,
            0,
            format!("metadata key '{key}' should be {want}, is {}", v.summary()),
        )
    }
}
