//! What a shared buffer holds, in DRM's words where DRM has them: the layout as a
//! [`DrmModifier`] and the plane format as a [`DrmFourcc`] (`R8` for int8 activations and
//! packed ternary bytes, `R16` for 16-bit planes), with the element type kept beside it,
//! since DRM has no format for f32 planes or for a blob of mixed weights.
//!
//! Every importer (KFD for the iGPU, amdxdna for the NPU) calls [`check_import`] before it
//! takes a dma-buf: the engine's kernels address bytes linearly, so a tiled modifier or a
//! format that does not match the element type is refused with a [`DescriptorError`] that
//! names it and says what is accepted. A dma-buf made outside the engine (a camera, a video
//! decoder) comes in through [`BufferDescriptor::from_drm`] with the producer's own fourcc
//! and modifier.

use std::fmt;

pub use drm_fourcc::{DrmFourcc, DrmModifier};

/// `DRM_FORMAT_INVALID` (`drm_fourcc.h`): the fourcc a producer passes when DRM has no
/// format for its elements.
pub const DRM_FORMAT_INVALID: u32 = 0;

/// What each element of a buffer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Element {
    /// Signed 8-bit integers (quantized activations).
    I8,
    /// Packed ternary weights: 2-bit codes, four to a byte.
    TernaryPacked,
    /// Bytes of mixed content laid out by the engine (a weights blob: packed ternary rows
    /// beside their f32 scales and norms; a scratch arena).
    Blob,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    Bf16,
    /// IEEE binary32 (KV cache, logits, scales): DRM has no single-channel 32-bit format.
    F32,
    /// 32-bit integers (token ids, accumulators).
    I32,
}

impl Element {
    /// The DRM format of a linear plane of these elements, where DRM has one.
    pub const fn drm_format(self) -> Option<DrmFourcc> {
        match self {
            Element::I8 | Element::TernaryPacked | Element::Blob => Some(DrmFourcc::R8),
            Element::F16 | Element::Bf16 => Some(DrmFourcc::R16),
            Element::F32 | Element::I32 => None,
        }
    }

    /// Short name for logs and `onebit probe`.
    pub const fn name(self) -> &'static str {
        match self {
            Element::I8 => "i8",
            Element::TernaryPacked => "ternary2",
            Element::Blob => "blob",
            Element::F16 => "f16",
            Element::Bf16 => "bf16",
            Element::F32 => "f32",
            Element::I32 => "i32",
        }
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The layout and format of a shared buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufferDescriptor {
    /// The DRM format of the plane; `None` where DRM has no name for the elements (f32).
    pub format: Option<DrmFourcc>,
    /// The layout (the engine writes and reads only [`DrmModifier::Linear`]).
    pub modifier: DrmModifier,
    /// What the elements are.
    pub element: Element,
}

impl BufferDescriptor {
    /// The debug line every shared buffer gets when it becomes (or arrives as) a dma-buf.
    pub fn log(&self, name: &str, len: usize, event: &str) {
        tracing::debug!(
            name,
            len,
            format = %self.format_name(),
            modifier = %self.modifier_name(),
            element = %self.element,
            "{event}"
        );
    }

    /// A linear buffer of `element`s, in the DRM format those elements have.
    pub const fn linear(element: Element) -> BufferDescriptor {
        BufferDescriptor {
            format: element.drm_format(),
            modifier: DrmModifier::Linear,
            element,
        }
    }

    /// Int8 activations: R8, linear.
    pub const fn int8() -> BufferDescriptor {
        Self::linear(Element::I8)
    }

    /// Packed ternary weight bytes: R8, linear.
    pub const fn ternary() -> BufferDescriptor {
        Self::linear(Element::TernaryPacked)
    }

    /// A blob of mixed content (weights with their scales, scratch): R8 bytes, linear.
    pub const fn blob() -> BufferDescriptor {
        Self::linear(Element::Blob)
    }

    /// f32 values (KV cache, logits, scales): no DRM format, linear.
    pub const fn f32() -> BufferDescriptor {
        Self::linear(Element::F32)
    }

    /// A descriptor for a dma-buf made outside the engine, from the producer's raw DRM
    /// fourcc (`DRM_FORMAT_INVALID`, 0, where DRM has none) and modifier. A fourcc DRM does
    /// not define is refused here; whether the engine can read the rest is for
    /// [`check_import`] to say.
    pub fn from_drm(
        fourcc: u32,
        modifier: u64,
        element: Element,
    ) -> Result<BufferDescriptor, DescriptorError> {
        let format = if fourcc == DRM_FORMAT_INVALID {
            None
        } else {
            Some(
                DrmFourcc::try_from(fourcc).map_err(|e| DescriptorError::UnknownFourcc {
                    raw: fourcc,
                    text: e.string_form(),
                })?,
            )
        };
        Ok(BufferDescriptor {
            format,
            modifier: DrmModifier::from(modifier),
            element,
        })
    }

    /// The raw fourcc (`DRM_FORMAT_INVALID` where DRM has none).
    pub fn fourcc_raw(&self) -> u32 {
        self.format.map_or(DRM_FORMAT_INVALID, |f| f as u32)
    }

    /// The raw modifier.
    pub fn modifier_raw(&self) -> u64 {
        self.modifier.into()
    }

    /// The format's name ("R8"), or "none" where DRM has none.
    pub fn format_name(&self) -> String {
        // A fourcc is four characters, padded with spaces ("R8  ").
        self.format
            .map_or_else(|| "none".into(), |f| f.to_string().trim_end().to_owned())
    }

    /// The modifier's name ("linear"), or its hex value.
    pub fn modifier_name(&self) -> String {
        modifier_name(self.modifier)
    }
}

fn modifier_name(m: DrmModifier) -> String {
    match m {
        DrmModifier::Linear => "linear".into(),
        DrmModifier::Unrecognized(v) => format!("{v:#018x}"),
        other => format!("{other:?} ({:#018x})", u64::from(other)),
    }
}

impl fmt::Display for BufferDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "format {} modifier {} element {}",
            self.format_name(),
            self.modifier_name(),
            self.element
        )
    }
}

/// What the engine's importers read: linear planes whose DRM format is the one of their
/// element type. Shown in refusals.
pub const ACCEPTED: &str = "modifier linear (DRM_FORMAT_MOD_LINEAR) with format R8 for i8, \
     packed ternary and blob bytes, R16 for f16/bf16, none (DRM_FORMAT_INVALID) for f32/i32";

/// A descriptor that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The fourcc is not one DRM defines.
    #[error(
        "fourcc {raw:#010x}{} is not a DRM format (drm_fourcc.h); onebit accepts {ACCEPTED}",
        text.as_ref().map(|t| format!(" ('{t}')")).unwrap_or_default()
    )]
    UnknownFourcc {
        /// The value.
        raw: u32,
        /// Its four characters, when printable.
        text: Option<String>,
    },
    /// The format is a DRM format, but not the one the importer reads for this element.
    #[error(
        "{importer} cannot read buffer '{buffer}': format {format} holding {element} \
         elements; it accepts {ACCEPTED}"
    )]
    UnsupportedFormat {
        /// Who refused ("KFD (iGPU)").
        importer: &'static str,
        /// The buffer's name.
        buffer: String,
        /// The format's name ("NV12", "none").
        format: String,
        /// The element type.
        element: Element,
    },
    /// The layout is not linear.
    #[error(
        "{importer} cannot read buffer '{buffer}': modifier {modifier} is not linear; it \
         accepts {ACCEPTED} — ask the producer for a linear buffer"
    )]
    UnsupportedModifier {
        /// Who refused.
        importer: &'static str,
        /// The buffer's name.
        buffer: String,
        /// The modifier's name or value.
        modifier: String,
    },
}

/// Whether `importer` can read `buffer` as `d` says it is laid out; every dma-buf import
/// goes through here.
pub fn check_import(
    importer: &'static str,
    buffer: &str,
    d: &BufferDescriptor,
) -> Result<(), DescriptorError> {
    if d.modifier != DrmModifier::Linear {
        return Err(DescriptorError::UnsupportedModifier {
            importer,
            buffer: buffer.to_owned(),
            modifier: d.modifier_name(),
        });
    }
    if d.format != d.element.drm_format() {
        return Err(DescriptorError::UnsupportedFormat {
            importer,
            buffer: buffer.to_owned(),
            format: d.format_name(),
            element: d.element,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_descriptors_are_linear_r8_r16_or_formatless() {
        assert_eq!(BufferDescriptor::int8().format, Some(DrmFourcc::R8));
        assert_eq!(BufferDescriptor::ternary().format, Some(DrmFourcc::R8));
        assert_eq!(BufferDescriptor::blob().format, Some(DrmFourcc::R8));
        assert_eq!(
            BufferDescriptor::linear(Element::F16).format,
            Some(DrmFourcc::R16)
        );
        assert_eq!(BufferDescriptor::f32().format, None);
        for e in [
            Element::I8,
            Element::TernaryPacked,
            Element::Blob,
            Element::F16,
            Element::Bf16,
            Element::F32,
            Element::I32,
        ] {
            let d = BufferDescriptor::linear(e);
            assert_eq!(d.modifier, DrmModifier::Linear);
            check_import("test", "b", &d).unwrap();
            // Raw values round-trip through the producer-side constructor.
            let back = BufferDescriptor::from_drm(d.fourcc_raw(), d.modifier_raw(), e).unwrap();
            assert_eq!(back, d);
        }
        assert_eq!(
            BufferDescriptor::int8().to_string(),
            "format R8 modifier linear element i8"
        );
        assert_eq!(
            BufferDescriptor::f32().to_string(),
            "format none modifier linear element f32"
        );
    }

    #[test]
    fn raw_values_match_drm_fourcc_h() {
        // fourcc_code('R', '8', ' ', ' ') and fourcc_code('R', '1', '6', ' ').
        let code = |s: &[u8; 4]| u32::from_le_bytes(*s);
        assert_eq!(BufferDescriptor::int8().fourcc_raw(), code(b"R8  "));
        assert_eq!(
            BufferDescriptor::linear(Element::Bf16).fourcc_raw(),
            code(b"R16 ")
        );
        assert_eq!(BufferDescriptor::int8().modifier_raw(), 0);
    }

    #[test]
    fn refusals_name_what_was_wrong() {
        let e =
            BufferDescriptor::from_drm(u32::from_le_bytes(*b"ZZZZ"), 0, Element::I8).unwrap_err();
        assert!(matches!(e, DescriptorError::UnknownFourcc { .. }));
        assert!(e.to_string().contains("'ZZZZ'"), "{e}");

        // AMD's GFX9 64K_S tiling (AMD_FMT_MOD | TILE_VERSION GFX9 | TILE 64K_S).
        let tiled = (0x02u64 << 56) | 1 | (9 << 8);
        let d = BufferDescriptor::from_drm(DrmFourcc::R8 as u32, tiled, Element::I8).unwrap();
        let e = check_import("KFD (iGPU)", "camera", &d).unwrap_err();
        assert!(matches!(e, DescriptorError::UnsupportedModifier { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("KFD (iGPU)") && msg.contains("camera") && msg.contains("linear"),
            "{msg}"
        );

        let nv12 = BufferDescriptor::from_drm(DrmFourcc::Nv12 as u32, 0, Element::I8).unwrap();
        let e = check_import("amdxdna (NPU)", "decoder", &nv12).unwrap_err();
        assert!(e.to_string().contains("NV12"), "{e}");
        // R16 holding int8: the format does not match the element.
        let wrong = BufferDescriptor::from_drm(DrmFourcc::R16 as u32, 0, Element::I8).unwrap();
        assert!(matches!(
            check_import("amdxdna (NPU)", "x", &wrong),
            Err(DescriptorError::UnsupportedFormat { .. })
        ));
    }
}
