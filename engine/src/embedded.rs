//! The default model compiled into the binaries: `onebit-tiny`, a 14 M-parameter BitNet b1.58
//! trained by `tools/train/` on public-domain English (Shakespeare, Milton, the King James
//! Bible), so that onebit generates text on a fresh machine with no download. Its files,
//! data sources, licences and measured quality are in `engine/models/onebit-tiny/`.
//!
//! The cargo feature `embedded-model` (on by default) compiles it in; appliance builds that
//! always pass `-m` can turn it off and save about 6 MB of binary.

#[cfg(feature = "embedded-model")]
use crate::model::{Bytes, Model};
#[cfg(feature = "embedded-model")]
use crate::tokenizer::Tokenizer;

/// The name the embedded model is loaded under (shown in logs, `info` and the API).
pub const NAME: &str = "onebit-tiny (embedded)";

/// The model file's path inside the repository, for messages.
pub const SOURCE: &str = "engine/models/onebit-tiny/onebit-tiny.i2_s.gguf";

/// Whether this build carries the embedded model.
pub const AVAILABLE: bool = cfg!(feature = "embedded-model");

// GGUF data is read in place (zero-copy), so the bytes get the alignment a mapping would give.
#[cfg(feature = "embedded-model")]
#[repr(C, align(64))]
struct Aligned<T: ?Sized>(T);

#[cfg(feature = "embedded-model")]
static GGUF: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/onebit-tiny/onebit-tiny.i2_s.gguf"
)));

/// The embedded GGUF file's bytes.
#[cfg(feature = "embedded-model")]
pub fn gguf_bytes() -> &'static [u8] {
    &GGUF.0
}

/// Loads the embedded model and its tokenizer (no file access; the weights stay in place).
#[cfg(feature = "embedded-model")]
pub fn load() -> crate::Result<(Model, Tokenizer)> {
    crate::format::load_gguf_bytes(NAME, Bytes::Static(gguf_bytes()))
}

#[cfg(all(test, feature = "embedded-model"))]
mod tests {
    #[test]
    fn embedded_bytes_are_aligned_gguf() {
        let b = super::gguf_bytes();
        assert_eq!(b.as_ptr() as usize % 64, 0);
        assert_eq!(&b[..4], crate::format::gguf::MAGIC);
    }
}
