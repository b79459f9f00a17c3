//! safetensors: an 8-byte header length, a JSON header `{name: {dtype, shape,
//! data_offsets}}`, then the data. Parsed here (not with the `safetensors` crate) so every
//! error names the file and byte offset, and tensors stay windows of the mapping.

use crate::model::Bytes;
use crate::{Error, Result};
use memmap2::Mmap;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest JSON header accepted (the spec's limit is 100 MB).
pub const MAX_HEADER: u64 = 100_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    F8E4M3,
    F8E5M2,
    U16,
    I16,
    F16,
    Bf16,
    U32,
    I32,
    F32,
    U64,
    I64,
    F64,
}

impl Dtype {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "BOOL" => Self::Bool,
            "U8" => Self::U8,
            "I8" => Self::I8,
            "F8_E4M3" => Self::F8E4M3,
            "F8_E5M2" => Self::F8E5M2,
            "U16" => Self::U16,
            "I16" => Self::I16,
            "F16" => Self::F16,
            "BF16" => Self::Bf16,
            "U32" => Self::U32,
            "I32" => Self::I32,
            "F32" => Self::F32,
            "U64" => Self::U64,
            "I64" => Self::I64,
            "F64" => Self::F64,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::U8 => "U8",
            Self::I8 => "I8",
            Self::F8E4M3 => "F8_E4M3",
            Self::F8E5M2 => "F8_E5M2",
            Self::U16 => "U16",
            Self::I16 => "I16",
            Self::F16 => "F16",
            Self::Bf16 => "BF16",
            Self::U32 => "U32",
            Self::I32 => "I32",
            Self::F32 => "F32",
            Self::U64 => "U64",
            Self::I64 => "I64",
            Self::F64 => "F64",
        }
    }

    pub fn size(self) -> usize {
        match self {
            Self::Bool | Self::U8 | Self::I8 | Self::F8E4M3 | Self::F8E5M2 => 1,
            Self::U16 | Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }

    /// Decodes F32/F16/BF16 data to f32.
    pub fn to_f32(self, data: &[u8]) -> Option<Vec<f32>> {
        use half::{bf16, f16};
        Some(match self {
            Self::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Self::F16 => data
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Self::Bf16 => data
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Absolute offset of the data in the file, and its length.
    pub offset: usize,
    pub len: usize,
}

impl Entry {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

pub struct SafeTensors {
    pub path: PathBuf,
    bytes: Bytes,
    entries: HashMap<String, Entry>,
    pub metadata: BTreeMap<String, String>,
}

impl SafeTensors {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only private mapping of a model file; see GgufFile::open for the
        // (documented) hazard of another process truncating it.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let len = map.len();
        let bytes = Bytes::mapped(&Arc::new(map), 0, len)
            .ok_or_else(|| Error::corrupt(path, 0, "cannot map"))?;
        Self::parse(path, bytes)
    }

    pub fn parse(path: impl Into<PathBuf>, bytes: Bytes) -> Result<Self> {
        let path = path.into();
        let buf = bytes.as_slice();
        let err = |off: u64, what: String| Error::corrupt(&path, off, what);
        if buf.len() < 8 {
            return Err(err(
                0,
                format!(
                    "file of {} bytes is too short for a safetensors header",
                    buf.len()
                ),
            ));
        }
        let n = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
        if n > MAX_HEADER || n > buf.len() as u64 - 8 {
            return Err(err(
                0,
                format!("header length {n} exceeds the file ({} bytes) or the 100 MB limit: not a safetensors file, or truncated", buf.len()),
            ));
        }
        let data_start = 8 + n as usize;
        let header: serde_json::Value =
            serde_json::from_slice(&buf[8..data_start]).map_err(|e| {
                err(
                    8 + e.column() as u64,
                    format!("header is not valid JSON: {e}"),
                )
            })?;
        let obj = header
            .as_object()
            .ok_or_else(|| err(8, "header is not a JSON object".into()))?;
        let data_len = buf.len() - data_start;
        let mut entries = HashMap::with_capacity(obj.len());
        let mut metadata = BTreeMap::new();
        for (name, v) in obj {
            if name == "__metadata__" {
                if let Some(m) = v.as_object() {
                    for (k, v) in m {
                        metadata.insert(
                            k.clone(),
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string()),
                        );
                    }
                }
                continue;
            }
            let bad = |what: &str| err(8, format!("tensor '{name}': {what}"));
            let dtype_s = v
                .get("dtype")
                .and_then(|d| d.as_str())
                .ok_or_else(|| bad("no dtype"))?;
            let dtype =
                Dtype::parse(dtype_s).ok_or_else(|| bad(&format!("unknown dtype {dtype_s:?}")))?;
            let shape: Vec<usize> = v
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad("no shape"))?
                .iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("shape is not a list of non-negative integers"))?;
            let offs = v
                .get("data_offsets")
                .and_then(|o| o.as_array())
                .ok_or_else(|| bad("no data_offsets"))?;
            let (a, b) = match offs.as_slice() {
                [a, b] => (a.as_u64(), b.as_u64()),
                _ => (None, None),
            };
            let (Some(a), Some(b)) = (a, b) else {
                return Err(bad("data_offsets is not [begin, end]"));
            };
            if a > b || b > data_len as u64 {
                return Err(err(
                    data_start as u64 + a.min(data_len as u64),
                    format!(
                        "tensor '{name}' data [{a}, {b}) lies outside the {data_len} data bytes: the file is truncated or corrupt"
                    ),
                ));
            }
            let numel = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
            let want = numel.and_then(|n| n.checked_mul(dtype.size()));
            if want != Some((b - a) as usize) {
                return Err(bad(&format!(
                    "shape {shape:?} of {} needs {} bytes but data_offsets span {}",
                    dtype.name(),
                    want.map(|w| w.to_string())
                        .unwrap_or_else(|| "too many".into()),
                    b - a
                )));
            }
            entries.insert(
                name.clone(),
                Entry {
                    name: name.clone(),
                    dtype,
                    shape,
                    offset: data_start + a as usize,
                    len: (b - a) as usize,
                },
            );
        }
        let mut sorted: Vec<&Entry> = entries.values().filter(|e| e.len > 0).collect();
        sorted.sort_by_key(|e| e.offset);
        for w in sorted.windows(2) {
            if w[0].offset + w[0].len > w[1].offset {
                return Err(err(
                    w[1].offset as u64,
                    format!(
                        "tensor '{}' data overlaps tensor '{}'",
                        w[1].name, w[0].name
                    ),
                ));
            }
        }
        Ok(Self {
            path,
            bytes,
            entries,
            metadata,
        })
    }

    pub fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Data of an entry (zero-copy window for mapped files).
    pub fn data(&self, e: &Entry) -> Result<Bytes> {
        self.bytes.slice(e.offset, e.len).ok_or_else(|| {
            Error::corrupt(
                &self.path,
                e.offset as u64,
                format!("tensor '{}' lies outside the file", e.name),
            )
        })
    }
}

/// A tensor to write.
pub struct OutTensor<'a> {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: std::borrow::Cow<'a, [u8]>,
}

/// Writes a safetensors file (tensors in the given order, 8-byte aligned data start).
pub fn write(
    path: &Path,
    tensors: &[OutTensor<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).unwrap_or_default(),
        );
    }
    let mut off = 0usize;
    for t in tensors {
        header.insert(
            t.name.clone(),
            serde_json::json!({ "dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [off, off + t.data.len()] }),
        );
        off += t.data.len();
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| Error::unsupported(path, format!("cannot serialize the header: {e}")))?;
    while (8 + h.len()) % 8 != 0 {
        h.push(b' ');
    }
    let io = |e| Error::io(path, e);
    let f = std::fs::File::create(path).map_err(io)?;
    let mut w = std::io::BufWriter::new(f);
    w.write_all(&(h.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&h).map_err(io)?;
    for t in tensors {
        w.write_all(&t.data).map_err(io)?;
    }
    w.flush().map_err(io)
}
