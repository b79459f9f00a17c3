//! Reads a model file into the weights' sealed memfd, so the bytes have one home in memory
//! and the file's page cache does not keep a second copy.
//!
//! - `uring` (default): `O_DIRECT` reads of large aligned chunks, several in flight through
//!   io_uring, straight into the memfd's writable mapping. Falls back to `read` (and says
//!   why in the log) where `O_DIRECT` is refused (tmpfs answers `EINVAL` at open) or
//!   io_uring is (`ENOSYS` on old kernels, `EPERM` under seccomp or
//!   `kernel.io_uring_disabled`).
//! - `read`: a plain `pread` loop into the mapping.
//! - `mmap`: no memfd; the tensors are windows of the file's page cache, as before.
//!
//! After `uring` and `read`, `posix_fadvise(DONTNEED)` drops whatever the file left in the
//! page cache.

use crate::model::{MemfdWriter, SealedFile};
use crate::{Error, Result};
use onebit_drv::io::KernelIo;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// How a model file gets into memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadMethod {
    /// io_uring `O_DIRECT` reads into a sealed memfd (falls back to `Read`).
    #[default]
    Uring,
    /// `pread` into a sealed memfd.
    Read,
    /// Tensors are windows of the file's page-cache mapping.
    Mmap,
}

impl LoadMethod {
    pub fn name(self) -> &'static str {
        match self {
            LoadMethod::Uring => "uring",
            LoadMethod::Read => "read",
            LoadMethod::Mmap => "mmap",
        }
    }
}

impl std::fmt::Display for LoadMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LoadMethod {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "uring" => Ok(LoadMethod::Uring),
            "read" => Ok(LoadMethod::Read),
            "mmap" => Ok(LoadMethod::Mmap),
            _ => Err(format!(
                "unknown load method '{s}': use uring (io_uring O_DIRECT into a sealed memfd), \
                 read (pread into a sealed memfd) or mmap (the file's page cache)"
            )),
        }
    }
}

/// How to load, and through which kernel (the real one, or an emulator in tests).
#[derive(Clone)]
pub struct LoadOptions {
    pub method: LoadMethod,
    pub io: Arc<dyn KernelIo>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            method: LoadMethod::default(),
            io: onebit_drv::io::real(),
        }
    }
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoadOptions({})", self.method)
    }
}

/// Bytes per read request.
const CHUNK: usize = 8 << 20;
/// Reads in flight.
const DEPTH: usize = 16;
/// `O_DIRECT` alignment of offsets, lengths and buffers: 4096 covers every logical block
/// size Linux supports on common devices (512 and 4096).
const DIRECT_ALIGN: usize = 4096;
/// Files from this size up log their progress.
const PROGRESS_FROM: usize = 256 << 20;

/// What happened, for logs and the load benchmark.
#[derive(Clone, Debug)]
pub struct ReadReport {
    /// The method that did the reading (after any fallback).
    pub used: LoadMethod,
    /// Why `uring` fell back to `read`, if it did.
    pub fallback: Option<String>,
}

/// Reads `path` into a new sealed memfd with `method` (`Uring` or `Read`).
pub fn read_sealed(
    path: &Path,
    method: LoadMethod,
    io: &Arc<dyn KernelIo>,
) -> Result<(SealedFile, ReadReport)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len() as usize;
    let name = format!(
        "onebit-weights:{}",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut dst = MemfdWriter::new(io, &name, len).map_err(|e| {
        Error::io(
            path,
            std::io::Error::new(
                e.kind(),
                format!("making the weights' memfd of {len} bytes: {e}"),
            ),
        )
    })?;
    let progress = Progress::new(path, len);
    let mut fallback = None;
    let used = if method == LoadMethod::Uring {
        match read_uring(path, len, &mut dst, &progress) {
            Ok(()) => LoadMethod::Uring,
            Err(why) => {
                tracing::warn!(
                    "{}: io_uring O_DIRECT load refused ({why}); loading with pread instead",
                    path.display()
                );
                fallback = Some(why);
                progress.restart();
                LoadMethod::Read
            }
        }
    } else {
        LoadMethod::Read
    };
    if used == LoadMethod::Read {
        let p = dst.as_mut_ptr();
        pread_all(file.as_raw_fd(), p, 0, len, &progress).map_err(|e| Error::io(path, e))?;
    }
    if let Err(e) = drop_page_cache(&file) {
        tracing::debug!("{}: posix_fadvise(DONTNEED) failed: {e}", path.display());
    }
    let sealed = dst.seal().map_err(|e| {
        Error::io(
            path,
            std::io::Error::new(e.kind(), format!("sealing the weights' memfd: {e}")),
        )
    })?;
    tracing::debug!(
        "{}: {len} bytes read with {used} into sealed memfd {}",
        path.display(),
        sealed.name()
    );
    Ok((sealed, ReadReport { used, fallback }))
}

/// Logs every tenth of a big file.
struct Progress<'a> {
    path: &'a Path,
    len: usize,
    done: std::cell::Cell<usize>,
    shown: std::cell::Cell<usize>,
}

impl<'a> Progress<'a> {
    fn new(path: &'a Path, len: usize) -> Self {
        Self {
            path,
            len,
            done: 0.into(),
            shown: 0.into(),
        }
    }

    /// Starts over (the fallback reads the whole file again).
    fn restart(&self) {
        self.done.set(0);
        self.shown.set(0);
    }

    fn add(&self, n: usize) {
        self.done.set(self.done.get() + n);
        if self.len < PROGRESS_FROM {
            return;
        }
        let tenth = (self.done.get() * 10 / self.len).min(10);
        if tenth > self.shown.get() {
            self.shown.set(tenth);
            tracing::info!(
                "loading {}: {}% ({} of {} MB)",
                self.path.display(),
                tenth * 10,
                self.done.get().min(self.len) / 1_000_000,
                self.len / 1_000_000
            );
        }
    }
}

/// `pread` of `len` bytes at `offset` into `dst`, retrying short reads and EINTR.
fn pread_all(
    fd: RawFd,
    dst: *mut u8,
    offset: usize,
    len: usize,
    progress: &Progress,
) -> std::io::Result<()> {
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK);
        // SAFETY: `dst..dst+len` is writable memory of the caller's (the memfd's mapping),
        // which nothing else touches while it is being filled.
        let r = unsafe { libc::pread(fd, dst.add(done).cast(), n, (offset + done) as libc::off_t) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the file ended at byte {} of {} (did it shrink while loading?)",
                    offset + done,
                    offset + len
                ),
            ));
        }
        done += r as usize;
        progress.add(r as usize);
    }
    Ok(())
}

/// Drops the file's pages from the page cache (after a load the memfd holds the bytes).
pub fn drop_page_cache(file: &std::fs::File) -> std::io::Result<()> {
    // SAFETY: plain advice on an open descriptor; no memory involved.
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    match r {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// The io_uring `O_DIRECT` load; `Err` says why it cannot run here (nothing useful was
/// lost: the caller reads the whole file again with `pread`).
fn read_uring(
    path: &Path,
    len: usize,
    dst: &mut MemfdWriter,
    progress: &Progress,
) -> std::result::Result<(), String> {
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => "O_DIRECT open failed with EINVAL: the file system does not \
                                   support direct I/O (tmpfs before Linux 6.6, some FUSE and \
                                   network file systems)"
                .to_string(),
            _ => format!("O_DIRECT open failed: {e}"),
        })?;
    let mut ring = io_uring::IoUring::new(DEPTH as u32).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::ENOSYS) => " (the kernel has no io_uring)",
            Some(libc::EPERM) => {
                " (io_uring is forbidden: seccomp, or sysctl kernel.io_uring_disabled)"
            }
            _ => "",
        };
        format!("io_uring_setup failed: {e}{why}")
    })?;
    // O_DIRECT needs aligned lengths: the last chunk reads up to the next aligned size (the
    // mapping is page-rounded, so it fits); the read stops short at the end of the file.
    let aligned_len = len.next_multiple_of(DIRECT_ALIGN);
    debug_assert!(aligned_len <= dst.mapped_len());
    let base = dst.as_mut_ptr();
    let fd = io_uring::types::Fd(direct.as_raw_fd());
    // (offset, len) of each request, indexed by user_data.
    let mut pending: Vec<(usize, usize)> = Vec::new();
    let mut queue: std::collections::VecDeque<(usize, usize)> = (0..aligned_len)
        .step_by(CHUNK)
        .map(|o| (o, CHUNK.min(aligned_len - o)))
        .collect();
    let mut in_flight = 0usize;
    // Bytes past `len` never count; short reads before it are finished with pread.
    let mut short: Vec<(usize, usize)> = Vec::new();
    while !queue.is_empty() || in_flight > 0 {
        while in_flight < DEPTH {
            let Some((off, n)) = queue.pop_front() else {
                break;
            };
            let id = pending.len();
            pending.push((off, n));
            // SAFETY: the destination lies inside the memfd's writable mapping, which stays
            // mapped until every request has completed (this function waits for all).
            let sqe = io_uring::opcode::Read::new(fd, unsafe { base.add(off) }, n as u32)
                .offset(off as u64)
                .build()
                .user_data(id as u64);
            // SAFETY: the entry's buffer stays valid until its completion is reaped below.
            if unsafe { ring.submission().push(&sqe) }.is_err() {
                queue.push_front((off, n));
                pending.pop();
                break;
            }
            in_flight += 1;
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            // Requests still in flight write the file's own bytes to their own offsets,
            // which is what the pread fallback writes there too.
            Err(e) => return Err(format!("io_uring_enter failed: {e}")),
        }
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        let mut failed = None;
        for (id, res) in done {
            in_flight -= 1;
            let (off, n) = pending[id as usize];
            if res == -libc::EINTR || res == -libc::EAGAIN {
                queue.push_back((off, n));
                continue;
            }
            if res < 0 {
                let e = std::io::Error::from_raw_os_error(-res);
                failed.get_or_insert(format!("an O_DIRECT read at byte {off} failed: {e}"));
                continue;
            }
            let got = res as usize;
            progress.add(got.min(len.saturating_sub(off)));
            if got < n && off + got < len {
                short.push((off + got, (n - got).min(len - off - got)));
            }
        }
        if let Some(why) = failed {
            // The kernel may still write into the mapping until every request completes:
            // wait for them before the caller fills it again.
            while in_flight > 0 {
                if let Err(e) = ring.submit_and_wait(1) {
                    if e.raw_os_error() != Some(libc::EINTR) {
                        tracing::warn!("waiting for io_uring reads to finish: {e}");
                    }
                }
                in_flight -= ring.completion().count();
            }
            return Err(why);
        }
    }
    drop(ring);
    // Short reads (rare with O_DIRECT, and unaligned after them) finish buffered.
    if !short.is_empty() {
        let file = std::fs::File::open(path).map_err(|e| format!("reopen failed: {e}"))?;
        for (off, n) in short {
            // SAFETY: `off..off+n` lies inside the mapping (off + n ≤ len).
            pread_all(file.as_raw_fd(), unsafe { base.add(off) }, off, n, progress)
                .map_err(|e| format!("finishing a short read at byte {off}: {e}"))?;
        }
    }
    Ok(())
}
