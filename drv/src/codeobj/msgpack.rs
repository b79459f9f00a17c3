//! A small MessagePack reader for the AMDGPU metadata note: every format the spec defines,
//! bounds-checked, with a nesting limit so hostile input cannot exhaust the stack.

use super::CodeObjectError;

/// A decoded MessagePack value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    /// An extension type (tag, bytes); AMDGPU metadata has none, but the format allows it.
    Ext(i8, Vec<u8>),
}

impl Value {
    /// The entry under string key `key` of a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => m
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

const MAX_DEPTH: usize = 32;

/// Decodes exactly one value from `bytes` (trailing bytes are an error).
pub fn decode(bytes: &[u8]) -> Result<Value, CodeObjectError> {
    let mut r = Reader { b: bytes, pos: 0 };
    let v = r.value(0)?;
    if r.pos != bytes.len() {
        return Err(r.err(format!(
            "{} trailing bytes after the metadata map",
            bytes.len() - r.pos
        )));
    }
    Ok(v)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn err(&self, what: String) -> CodeObjectError {
        CodeObjectError::Metadata {
            offset: self.pos,
            what,
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], CodeObjectError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            return Err(self.err(format!(
                "needs {n} more bytes, {} left",
                self.b.len() - self.pos
            )));
        };
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64, CodeObjectError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn int(&mut self, n: usize) -> Result<i64, CodeObjectError> {
        let u = self.uint(n)?;
        let shift = 64 - 8 * n as u32;
        Ok(((u << shift) as i64) >> shift)
    }

    fn len_checked(&self, n: u64, min_each: usize) -> Result<usize, CodeObjectError> {
        // Each element needs at least `min_each` bytes: reject lengths the input cannot hold
        // before allocating for them.
        let left = (self.b.len() - self.pos) as u64;
        if n.saturating_mul(min_each as u64) > left {
            return Err(self.err(format!("length {n} exceeds the {left} bytes left")));
        }
        Ok(n as usize)
    }

    fn str(&mut self, n: u64) -> Result<Value, CodeObjectError> {
        let n = self.len_checked(n, 1)?;
        let at = self.pos;
        let s = self.take(n)?;
        match std::str::from_utf8(s) {
            Ok(s) => Ok(Value::Str(s.to_owned())),
            Err(_) => Err(CodeObjectError::Metadata {
                offset: at,
                what: "string is not UTF-8".into(),
            }),
        }
    }

    fn bin(&mut self, n: u64) -> Result<Value, CodeObjectError> {
        let n = self.len_checked(n, 1)?;
        Ok(Value::Bin(self.take(n)?.to_vec()))
    }

    fn array(&mut self, n: u64, depth: usize) -> Result<Value, CodeObjectError> {
        let n = self.len_checked(n, 1)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(v))
    }

    fn map(&mut self, n: u64, depth: usize) -> Result<Value, CodeObjectError> {
        let n = self.len_checked(n, 2)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let val = self.value(depth + 1)?;
            v.push((k, val));
        }
        Ok(Value::Map(v))
    }

    fn ext(&mut self, n: u64) -> Result<Value, CodeObjectError> {
        let tag = self.int(1)? as i8;
        let n = self.len_checked(n, 1)?;
        Ok(Value::Ext(tag, self.take(n)?.to_vec()))
    }

    fn value(&mut self, depth: usize) -> Result<Value, CodeObjectError> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("nesting deeper than {MAX_DEPTH}")));
        }
        let t = self.take(1)?[0];
        Ok(match t {
            0x00..=0x7f => Value::Int(i128::from(t)),
            0x80..=0x8f => self.map(u64::from(t & 0x0f), depth)?,
            0x90..=0x9f => self.array(u64::from(t & 0x0f), depth)?,
            0xa0..=0xbf => self.str(u64::from(t & 0x1f))?,
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 => {
                let n = self.uint(1)?;
                self.bin(n)?
            }
            0xc5 => {
                let n = self.uint(2)?;
                self.bin(n)?
            }
            0xc6 => {
                let n = self.uint(4)?;
                self.bin(n)?
            }
            0xc7 => {
                let n = self.uint(1)?;
                self.ext(n)?
            }
            0xc8 => {
                let n = self.uint(2)?;
                self.ext(n)?
            }
            0xc9 => {
                let n = self.uint(4)?;
                self.ext(n)?
            }
            0xca => Value::Float(f64::from(f32::from_bits(self.uint(4)? as u32))),
            0xcb => Value::Float(f64::from_bits(self.uint(8)?)),
            0xcc => Value::Int(i128::from(self.uint(1)?)),
            0xcd => Value::Int(i128::from(self.uint(2)?)),
            0xce => Value::Int(i128::from(self.uint(4)?)),
            0xcf => Value::Int(i128::from(self.uint(8)?)),
            0xd0 => Value::Int(i128::from(self.int(1)?)),
            0xd1 => Value::Int(i128::from(self.int(2)?)),
            0xd2 => Value::Int(i128::from(self.int(4)?)),
            0xd3 => Value::Int(i128::from(self.int(8)?)),
            0xd4 => self.ext(1)?,
            0xd5 => self.ext(2)?,
            0xd6 => self.ext(4)?,
            0xd7 => self.ext(8)?,
            0xd8 => self.ext(16)?,
            0xd9 => {
                let n = self.uint(1)?;
                self.str(n)?
            }
            0xda => {
                let n = self.uint(2)?;
                self.str(n)?
            }
            0xdb => {
                let n = self.uint(4)?;
                self.str(n)?
            }
            0xdc => {
                let n = self.uint(2)?;
                self.array(n, depth)?
            }
            0xdd => {
                let n = self.uint(4)?;
                self.array(n, depth)?
            }
            0xde => {
                let n = self.uint(2)?;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.uint(4)?;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(i128::from(t as i8)),
            0xc1 => {
                self.pos -= 1;
                return Err(self.err("byte 0xc1 is never used in MessagePack".into()));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_scalar_format() {
        let cases: &[(&[u8], Value)] = &[
            (&[0x05], Value::Int(5)),
            (&[0xff], Value::Int(-1)),
            (&[0xcc, 0xfe], Value::Int(254)),
            (&[0xcd, 0x01, 0x00], Value::Int(256)),
            (&[0xce, 0, 1, 0, 0], Value::Int(65536)),
            (
                &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                Value::Int(u64::MAX as i128),
            ),
            (&[0xd0, 0x80], Value::Int(-128)),
            (&[0xd1, 0xff, 0x00], Value::Int(-256)),
            (&[0xd2, 0xff, 0xff, 0xff, 0xfe], Value::Int(-2)),
            (
                &[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0],
                Value::Int(i64::MIN as i128),
            ),
            (&[0xc0], Value::Nil),
            (&[0xc3], Value::Bool(true)),
            (&[0xca, 0x3f, 0x80, 0, 0], Value::Float(1.0)),
            (&[0xcb, 0x40, 0, 0, 0, 0, 0, 0, 0], Value::Float(2.0)),
            (&[0xa2, b'h', b'i'], Value::Str("hi".into())),
            (&[0xd9, 1, b'x'], Value::Str("x".into())),
            (&[0xc4, 2, 9, 8], Value::Bin(vec![9, 8])),
            (&[0xd4, 3, 7], Value::Ext(3, vec![7])),
            (
                &[0x92, 1, 2],
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
            ),
            (&[0xdc, 0, 1, 0xc2], Value::Array(vec![Value::Bool(false)])),
        ];
        for (bytes, want) in cases {
            assert_eq!(&decode(bytes).unwrap(), want, "{bytes:x?}");
        }
    }

    #[test]
    fn map_lookup_by_key() {
        let v = decode(&[0x81, 0xa1, b'k', 0x07]).unwrap();
        assert_eq!(v.get("k").and_then(Value::as_u64), Some(7));
        assert!(v.get("x").is_none());
    }

    #[test]
    fn rejects_truncation_huge_lengths_depth_and_trailing_bytes() {
        assert!(decode(&[0xa3, b'a']).is_err());
        assert!(decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode(&[0xc1]).is_err());
        assert!(decode(&[0x01, 0x02]).is_err());
        let deep = vec![0x91u8; 100];
        let e = decode(&deep).unwrap_err().to_string();
        assert!(e.contains("nesting"), "{e}");
    }
}
