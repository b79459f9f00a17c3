//! Medusa heads in model files (see [`crate::speculate::medusa`] for what they are):
//! `medusa.{k}.weight` / `medusa.{k}.bias` tensors with `medusa.head_count` and
//! `medusa.kind` in a GGUF file's metadata, or the same tensors in `medusa.safetensors`
//! beside a Hugging Face directory's weights (its `__metadata__` may carry the same keys;
//! without them the head count is the number of `medusa.{k}.weight` tensors).

use super::gguf::{ty, GgufFile, Value};
use super::gguf_model::floats;
use super::gguf_write::OutTensor;
use super::hf::safetensors::{self, Dtype, SafeTensors};
use crate::speculate::medusa::{tensor_names, MedusaHeads, KIND};
use crate::{Error, Result};
use half::f16;
use std::collections::BTreeMap;
use std::path::Path;

/// The file name of the heads in a Hugging Face directory.
pub const HF_FILE: &str = "medusa.safetensors";
pub const KEY_COUNT: &str = "medusa.head_count";
pub const KEY_KIND: &str = "medusa.kind";

/// The heads a GGUF file carries, if any.
pub fn from_gguf(g: &GgufFile, hidden: usize) -> Result<Option<MedusaHeads>> {
    let Some(count) = g.get(KEY_COUNT) else {
        return Ok(None);
    };
    let count = count
        .as_u64()
        .ok_or_else(|| Error::corrupt(&g.path, 0, format!("{KEY_COUNT} is not an integer")))?;
    let kind = g.get(KEY_KIND).and_then(Value::as_str);
    let get = |name: &str| {
        let t = g.tensor(name)?;
        floats(t.ggml_type, g.tensor_data(t).ok()?.as_slice())
    };
    MedusaHeads::from_tensors(count as usize, kind, hidden, get)
        .map(Some)
        .map_err(|e| Error::tensor(&g.path, "medusa", e.to_string()))
}

/// The heads in `dir/medusa.safetensors`, if the file is there.
pub fn from_hf_dir(dir: &Path, hidden: usize) -> Result<Option<MedusaHeads>> {
    let path = dir.join(HF_FILE);
    if !path.exists() {
        return Ok(None);
    }
    from_safetensors(&path, hidden).map(Some)
}

/// The heads in a `medusa.safetensors` file.
pub fn from_safetensors(path: &Path, hidden: usize) -> Result<MedusaHeads> {
    let st = SafeTensors::open(path)?;
    let count = match st.metadata.get(KEY_COUNT) {
        Some(c) => c.parse().map_err(|_| {
            Error::corrupt(path, 0, format!("{KEY_COUNT} = {c:?} is not an integer"))
        })?,
        None => (0..)
            .take_while(|&k| st.get(&tensor_names(k).0).is_some())
            .count(),
    };
    let kind = st.metadata.get(KEY_KIND).map(String::as_str);
    let get = |name: &str| {
        let e = st.get(name)?;
        e.dtype.to_f32(st.data(e).ok()?.as_slice())
    };
    MedusaHeads::from_tensors(count, kind, hidden, get)
        .map_err(|e| Error::tensor(path, "medusa", e.to_string()))
}

/// The GGUF metadata and tensors (weights F16, biases F32) that store `heads`.
pub fn gguf_contents(heads: &MedusaHeads) -> (Vec<(String, Value)>, Vec<OutTensor<'static>>) {
    let kv = vec![
        (KEY_COUNT.to_string(), Value::U32(heads.count() as u32)),
        (KEY_KIND.to_string(), Value::String(KIND.into())),
    ];
    let n = heads.hidden as u64;
    let mut tensors = Vec::new();
    for (k, (w, b)) in heads.weights.iter().zip(&heads.biases).enumerate() {
        let (wn, bn) = tensor_names(k);
        let wb: Vec<u8> = w
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect();
        let bb: Vec<u8> = b.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push(OutTensor::from_bytes(wn, vec![n, n], ty::F16, wb.into()));
        tensors.push(OutTensor::from_bytes(bn, vec![n], ty::F32, bb.into()));
    }
    (kv, tensors)
}

/// Writes `heads` as `medusa.safetensors` into a Hugging Face directory.
pub fn write_hf(dir: &Path, heads: &MedusaHeads) -> Result<()> {
    let n = heads.hidden;
    let mut tensors = Vec::new();
    for (k, (w, b)) in heads.weights.iter().zip(&heads.biases).enumerate() {
        let (wn, bn) = tensor_names(k);
        let wb: Vec<u8> = w
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect();
        let bb: Vec<u8> = b.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push(safetensors::OutTensor {
            name: wn,
            dtype: Dtype::F16,
            shape: vec![n, n],
            data: wb.into(),
        });
        tensors.push(safetensors::OutTensor {
            name: bn,
            dtype: Dtype::F32,
            shape: vec![n],
            data: bb.into(),
        });
    }
    let metadata = BTreeMap::from([
        (KEY_COUNT.to_string(), heads.count().to_string()),
        (KEY_KIND.to_string(), KIND.to_string()),
    ]);
    safetensors::write(&dir.join(HF_FILE), &tensors, &metadata)
}
