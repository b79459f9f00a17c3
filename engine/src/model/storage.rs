//! Tensor bytes that are either a window of a memory-mapped file (zero-copy) or owned
//! (repacked at load).

use memmap2::Mmap;
use std::sync::Arc;

#[derive(Clone)]
pub enum Bytes {
    Mapped { map: Arc<Mmap>, offset: usize, len: usize },
    Owned(Arc<Vec<u8>>),
}

impl Bytes {
    /// A window of a mapping; `None` if it does not lie inside it.
    pub fn mapped(map: &Arc<Mmap>, offset: usize, len: usize) -> Option<Self> {
        let end = offset.checked_add(len)?;
        (end <= map.len()).then(|| Self::Mapped { map: map.clone(), offset, len })
    }

    pub fn owned(v: Vec<u8>) -> Self {
        Self::Owned(Arc::new(v))
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Self::Mapped { map, offset, len } => &map[*offset..*offset + *len],
            Self::Owned(v) => v,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self, Self::Mapped { .. })
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_mapped() { "mapped" } else { "owned" };
        write!(f, "Bytes({kind}, {} bytes)", self.len())
    }
}
