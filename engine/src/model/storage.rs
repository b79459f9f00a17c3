//! Tensor bytes: a window of the sealed memfd the file was read into, or of a memory-mapped
//! file (zero-copy), owned (repacked at load), compiled in, or a window of a device's shared
//! buffer (the one copy CPU and device read).

use super::sealed::SealedFile;
use memmap2::Mmap;
use std::sync::Arc;

/// Memory another owner keeps mapped as long as this handle lives — a device surface's
/// shared weight buffer — and that nobody writes any more.
pub trait SharedBytes: Send + Sync {
    fn bytes(&self) -> &[u8];
    /// The memfd behind [`bytes`](Self::bytes) and where byte 0 lies in it, when there is
    /// one (so another device can import the same pages).
    fn memfd(&self) -> Option<(std::os::fd::RawFd, u64)> {
        None
    }
}

#[derive(Clone)]
pub enum Bytes {
    /// A window of a device's shared buffer: the CPU reads the very pages the device reads.
    Shared {
        buf: Arc<dyn SharedBytes>,
        offset: usize,
        len: usize,
    },
    /// A window of the sealed memfd the model file was read into (mapped `PROT_READ`).
    Sealed {
        file: Arc<SealedFile>,
        offset: usize,
        len: usize,
    },
    /// A window of the file's page cache (`--load mmap`).
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

    /// The whole of a sealed memfd's file bytes.
    pub fn sealed(file: Arc<SealedFile>) -> Self {
        let len = file.as_slice().len();
        Self::Sealed {
            file,
            offset: 0,
            len,
        }
    }

    pub fn owned(v: Vec<u8>) -> Self {
        Self::Owned(Arc::new(v))
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Self::Shared { buf, offset, len } => &buf.bytes()[*offset..*offset + *len],
            Self::Sealed { file, offset, len } => &file.as_slice()[*offset..*offset + *len],
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
            Self::Shared {
                buf, offset: base, ..
            } => Self::Shared {
                buf: buf.clone(),
                offset: base + offset,
                len,
            },
            Self::Sealed {
                file, offset: base, ..
            } => Self::Sealed {
                file: file.clone(),
                offset: base + offset,
                len,
            },
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

    /// The whole pages inside `range` (offsets into these bytes) as offsets into the
    /// mapping; `None` for bytes that are not a file mapping or hold no whole page.
    fn whole_pages(&self, range: std::ops::Range<usize>) -> Option<(&Mmap, usize, usize)> {
        let Self::Mapped { map, offset, len } = self else {
            return None;
        };
        let page = 4096;
        let (lo, hi) = (range.start.min(*len), range.end.min(*len));
        // The mapping starts page-aligned, so offsets into it align like addresses.
        let start = (offset + lo).div_ceil(page) * page;
        let end = (offset + hi) / page * page;
        (end > start).then_some((map, start, end))
    }

    /// Tells the kernel this process no longer needs the file pages behind a mapped
    /// window (after repacking them elsewhere), so they leave the resident set. The
    /// mapping is a read-only file mapping: touching it again re-reads the file.
    ///
    /// A no-op for a sealed memfd's window: its shmem pages hold the only copy of the bytes
    /// (`MADV_DONTNEED` would only unmap them, freeing nothing), and these bytes may still be
    /// read. Bytes nobody reads again go with [`discard_pages`](Self::discard_pages).
    pub fn release_pages(&self) {
        self.release_range(0..self.len());
    }

    /// [`release_pages`](Self::release_pages) for the whole pages inside `range` (offsets
    /// into these bytes); a no-op for bytes that are not a file mapping.
    pub fn release_range(&self, range: std::ops::Range<usize>) {
        let Some((map, start, end)) = self.whole_pages(range) else {
            return;
        };
        // SAFETY: the map is a read-only private file mapping with no private
        // (copy-on-write) pages, so MADV_DONTNEED only drops clean page-cache
        // references; later reads fault the same bytes back from the file.
        let r = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
        };
        if let Err(e) = r {
            tracing::debug!("madvise(DONTNEED) on repacked pages failed: {e}");
        }
    }

    /// Frees the whole pages of a window that nobody reads again (the caller drops or
    /// replaces every handle that reads it): a sealed memfd's pages are punched out (they
    /// are the only copy, so reading them again would give zeros), a file mapping's pages
    /// are released (reading them again would re-read the file). A no-op for other bytes.
    pub fn discard_pages(&self) {
        self.discard_range(0..self.len());
    }

    /// [`discard_pages`](Self::discard_pages) for the whole pages inside `range` (offsets
    /// into these bytes).
    pub fn discard_range(&self, range: std::ops::Range<usize>) {
        match self {
            Self::Sealed { file, offset, len } => {
                let (lo, hi) = (range.start.min(*len), range.end.min(*len));
                file.punch(offset + lo, offset + hi)
            }
            _ => self.release_range(range),
        }
    }

    /// The memfd these bytes are a window of and their offset in it: a sealed memfd's
    /// window, or a device buffer's window over such a memfd. `None` for other bytes.
    pub fn memfd_window(&self) -> Option<(std::os::fd::RawFd, u64)> {
        match self {
            Self::Sealed { file, offset, .. } => Some((file.raw_fd(), *offset as u64)),
            Self::Shared { buf, offset, .. } => {
                buf.memfd().map(|(fd, base)| (fd, base + *offset as u64))
            }
            _ => None,
        }
    }

    /// Whether these bytes are a window of a sealed memfd.
    pub fn is_sealed(&self) -> bool {
        matches!(self, Self::Sealed { .. })
    }

    /// Releases the window's whole pages and makes them unreadable, so they stay out of
    /// the resident set until [`set_readable`](Self::set_readable) brings them back;
    /// returns whether they were made unreadable. A sealed memfd's pages cannot come back
    /// once freed: they are punched out for good ([`discard_pages`](Self::discard_pages))
    /// and this returns false.
    ///
    /// # Safety
    /// As [`set_readable`](Self::set_readable) with `readable = false`; for a sealed memfd,
    /// nothing may read these bytes ever again.
    pub unsafe fn retire_pages(&self) -> bool {
        if self.is_sealed() {
            self.discard_pages();
            return false;
        }
        self.release_pages();
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.set_readable(false) }
    }

    /// Makes the whole pages inside a mapped window unreadable (`readable = false`) or
    /// readable again; returns whether anything changed (false for unmapped bytes).
    ///
    /// Unreadable pages stay out of the resident set for good: the kernel maps page-cache
    /// folios whole on a fault (and fault-around maps neighbours too), so pages released
    /// with [`release_pages`](Self::release_pages) next to pages still in use come back
    /// with them; pages in a separate `PROT_NONE` mapping area do not.
    ///
    /// # Safety
    /// While unreadable, nothing may read these bytes: the caller must hold the only use of
    /// this window (no slices of it alive, no clones reading it) until it is readable again.
    pub unsafe fn set_readable(&self, readable: bool) -> bool {
        let Some((map, start, end)) = self.whole_pages(0..self.len()) else {
            return false;
        };
        let prot = if readable {
            nix::sys::mman::ProtFlags::PROT_READ
        } else {
            nix::sys::mman::ProtFlags::PROT_NONE
        };
        let Some(addr) = std::ptr::NonNull::new(map.as_ptr().wrapping_add(start) as *mut _) else {
            return false;
        };
        // SAFETY: [start, end) is whole pages inside this window of a live read-only
        // mapping (the Arc keeps it mapped); the caller guarantees nobody reads it while
        // it is PROT_NONE, and PROT_READ restores the mapping's own protection.
        match unsafe { nix::sys::mman::mprotect(addr, end - start, prot) } {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("mprotect on {} bytes failed: {e}", end - start);
                false
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

    /// A window of `buf`; `None` if it does not lie inside it.
    pub fn shared(buf: &Arc<dyn SharedBytes>, offset: usize, len: usize) -> Option<Self> {
        let end = offset.checked_add(len)?;
        (end <= buf.bytes().len()).then(|| Self::Shared {
            buf: buf.clone(),
            offset,
            len,
        })
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Self::Shared { .. } => "device-shared",
            Self::Sealed { .. } => "sealed-memfd",
            Self::Mapped { .. } => "mapped",
            Self::Owned(_) => "owned",
            Self::Static(_) => "static",
        };
        write!(f, "Bytes({kind}, {} bytes)", self.len())
    }
}
