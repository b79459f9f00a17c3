//! Tensor bytes that are either a window of a memory-mapped file (zero-copy) or owned
//! (repacked at load).

use memmap2::Mmap;
use std::sync::Arc;

#[derive(Clone)]
pub enum Bytes {
    Mapped {
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
    },
    Owned(Arc<Vec<u8>>),
    /// Bytes compiled into the binary (the embedded default model).
    Static(&'static [u8]),
}

impl Bytes {
    /// A window of a mapping; `None` if it does not lie inside it.
    pub fn mapped(map: &Arc<Mmap>, offset: usize, len: usize) -> Option<Self> {
        let end = offset.checked_add(len)?;
        (end <= map.len()).then(|| Self::Mapped {
            map: map.clone(),
            offset,
            len,
        })
    }

    pub fn owned(v: Vec<u8>) -> Self {
        Self::Owned(Arc::new(v))
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Self::Mapped { map, offset, len } => &map[*offset..*offset + *len],
            Self::Owned(v) => v,
            Self::Static(s) => s,
        }
    }

    /// A sub-window of these bytes; `None` if it does not lie inside them.
    pub fn slice(&self, offset: usize, len: usize) -> Option<Self> {
        let end = offset.checked_add(len)?;
        if end > self.len() {
            return None;
        }
        Some(match self {
            Self::Mapped {
                map, offset: base, ..
            } => Self::Mapped {
                map: map.clone(),
                offset: base + offset,
                len,
            },
            Self::Owned(v) => Self::owned(v[offset..end].to_vec()),
            Self::Static(s) => Self::Static(&s[offset..end]),
        })
    }

    /// Tells the kernel this process no longer needs the file pages behind a mapped
    /// window (after repacking them elsewhere), so they leave the resident set. The
    /// mapping is a read-only file mapping: touching it again re-reads the file.
    pub fn release_pages(&self) {
        self.release_range(0..self.len());
    }

    /// [`release_pages`](Self::release_pages) for the whole pages inside `range` (offsets
    /// into these bytes); a no-op for bytes that are not a file mapping.
    pub fn release_range(&self, range: std::ops::Range<usize>) {
        if let Self::Mapped { map, offset, len } = self {
            let page = 4096;
            let (lo, hi) = (range.start.min(*len), range.end.min(*len));
            let start = (offset + lo).div_ceil(page) * page;
            let end = (offset + hi) / page * page;
            if end > start {
                // SAFETY: the map is a read-only private file mapping with no private
                // (copy-on-write) pages, so MADV_DONTNEED only drops clean page-cache
                // references; later reads fault the same bytes back from the file.
                let r = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
                if let Err(e) = r {
                    tracing::debug!("madvise(DONTNEED) on repacked pages failed: {e}");
                }
            }
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
        let kind = match self {
            Self::Mapped { .. } => "mapped",
            Self::Owned(_) => "owned",
            Self::Static(_) => "static",
        };
        write!(f, "Bytes({kind}, {} bytes)", self.len())
    }
}
