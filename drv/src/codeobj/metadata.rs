//! The `amdhsa.*` metadata map (reference §4.3) reduced to what the loader uses.

use super::kernarg::ArgKind;
use super::msgpack::Value;
use super::{ArgInfo, CodeObjectError};

pub(super) struct RawKernel {
    pub name: String,
    pub symbol: String,
    pub kernarg_size: u32,
    pub kernarg_align: u32,
    pub group_segment_fixed_size: u32,
    pub private_segment_fixed_size: u32,
    pub wavefront_size: u32,
    pub max_flat_workgroup_size: u32,
    pub uses_dynamic_stack: bool,
    pub args: Vec<ArgInfo>,
}

fn meta_err(what: String) -> CodeObjectError {
    CodeObjectError::Metadata { offset: 0, what }
}

fn u32_field(k: &Value, name: &str, key: &str) -> Result<u32, CodeObjectError> {
    k.get(key)
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| {
            meta_err(format!(
                "kernel `{name}`: `{key}` missing or not a 32-bit unsigned integer"
            ))
        })
}

/// (`amdhsa.target`, kernels).
pub(super) fn read(meta: &Value) -> Result<(String, Vec<RawKernel>), CodeObjectError> {
    let version = meta
        .get("amdhsa.version")
        .and_then(Value::as_array)
        .ok_or_else(|| meta_err("`amdhsa.version` missing".into()))?;
    let (major, minor) = (
        version.first().and_then(Value::as_u64),
        version.get(1).and_then(Value::as_u64),
    );
    if major != Some(1) || minor.is_none_or(|m| m < 2) {
        return Err(meta_err(format!(
            "`amdhsa.version` {major:?}.{minor:?}: need 1.2 or later (code object v5); rebuild with clang-19"
        )));
    }
    let target = meta
        .get("amdhsa.target")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kernels = meta
        .get("amdhsa.kernels")
        .and_then(Value::as_array)
        .ok_or_else(|| meta_err("`amdhsa.kernels` missing".into()))?;
    let mut out = Vec::with_capacity(kernels.len());
    for k in kernels {
        let name = k
            .get(".name")
            .and_then(Value::as_str)
            .ok_or_else(|| meta_err("a kernel without `.name`".into()))?;
        let symbol = k
            .get(".symbol")
            .and_then(Value::as_str)
            .ok_or_else(|| meta_err(format!("kernel `{name}` without `.symbol`")))?;
        let kernarg_size = u32_field(k, name, ".kernarg_segment_size")?;
        let kernarg_align = u32_field(k, name, ".kernarg_segment_align")?;
        if !kernarg_align.is_power_of_two() {
            return Err(meta_err(format!(
                "kernel `{name}`: kernarg alignment {kernarg_align} is not a power of two"
            )));
        }
        let wavefront_size = u32_field(k, name, ".wavefront_size")?;
        if wavefront_size != 32 && wavefront_size != 64 {
            return Err(meta_err(format!(
                "kernel `{name}`: wavefront size {wavefront_size}"
            )));
        }
        let mut args = Vec::new();
        for a in k.get(".args").and_then(Value::as_array).unwrap_or_default() {
            let offset = u32_field(a, name, ".offset")?;
            let size = u32_field(a, name, ".size")?;
            let value_kind = a
                .get(".value_kind")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    meta_err(format!("kernel `{name}`: argument without `.value_kind`"))
                })?
                .to_string();
            if offset.checked_add(size).is_none_or(|e| e > kernarg_size) {
                return Err(meta_err(format!(
                    "kernel `{name}`: argument at {offset}+{size} lies outside the {kernarg_size}-byte kernarg segment"
                )));
            }
            let kind = ArgKind::from_value_kind(&value_kind);
            args.push(ArgInfo {
                offset,
                size,
                value_kind,
                kind,
            });
        }
        out.push(RawKernel {
            name: name.to_string(),
            symbol: symbol.to_string(),
            kernarg_size,
            kernarg_align,
            group_segment_fixed_size: u32_field(k, name, ".group_segment_fixed_size")?,
            private_segment_fixed_size: u32_field(k, name, ".private_segment_fixed_size")?,
            wavefront_size,
            max_flat_workgroup_size: k
                .get(".max_flat_workgroup_size")
                .and_then(Value::as_u64)
                .unwrap_or(1024) as u32,
            uses_dynamic_stack: k
                .get(".uses_dynamic_stack")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            args,
        });
    }
    Ok((target, out))
}
