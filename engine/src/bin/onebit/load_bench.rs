//! `onebit load-bench`: one timed model load (run each in a fresh process, so that peak RSS
//! is this load's), with the file's page cache measured after it. bench/load.sh drives it.

use crate::bench::status_bytes;
use crate::common::{load_options, CliResult};
use onebit_engine::format::read_file::drop_page_cache;
use onebit_engine::format::LoadMethod;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file (or pulled `OWNER/NAME[:FILE]`) to load.
    #[arg(short = 'm', long = "model", value_parser = onebit_engine::hub::model_arg)]
    pub model: PathBuf,
    /// Load method: uring, read or mmap.
    #[arg(long = "load", default_value = "uring")]
    pub load: LoadMethod,
    /// Drop the file's page cache first (posix_fadvise DONTNEED) for a cold load.
    #[arg(long)]
    pub cold: bool,
}

/// Bytes of `file` resident in the page cache (`mincore` over a fresh mapping, which
/// itself faults nothing in).
fn page_cache_bytes(file: &std::fs::File, len: usize) -> std::io::Result<usize> {
    if len == 0 {
        return Ok(0);
    }
    // SAFETY: a fresh read-only shared mapping of an open file, never dereferenced here.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let page = onebit_drv::page_size() as usize;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `vec` has one byte per page of the mapping, which is alive until munmap.
    let r = unsafe { libc::mincore(p, len, vec.as_mut_ptr()) };
    let e = std::io::Error::last_os_error();
    // SAFETY: our own mapping, not used after this.
    unsafe { libc::munmap(p, len) };
    if r != 0 {
        return Err(e);
    }
    Ok(vec.iter().filter(|&&b| b & 1 != 0).count() * page)
}

/// Reads one byte of every page of the model's weights, so that every load method ends
/// with every weight in memory (an mmap load leaves the untouched ones on disk until the
/// first token needs them); returns a checksum so that the reads cannot be elided.
fn touch_weights(model: &onebit_engine::model::Model) -> u64 {
    let page = onebit_drv::page_size() as usize;
    let mut sum = 0u64;
    let mut touch = |b: &[u8]| {
        for i in (0..b.len()).step_by(page) {
            sum = sum.wrapping_add(u64::from(std::hint::black_box(b[i])));
        }
    };
    touch(model.embed_tokens.data.as_slice());
    for l in &model.layers {
        for t in l.projections() {
            touch(t.view().data);
        }
    }
    sum
}

pub fn main(a: Args) -> CliResult {
    let file = std::fs::File::open(&a.model).map_err(|e| format!("{}: {e}", a.model.display()))?;
    let len = file.metadata()?.len() as usize;
    let mut cold_cache = None;
    if a.cold {
        if let Err(e) = drop_page_cache(&file) {
            eprintln!("posix_fadvise(DONTNEED) failed ({e}): the OS cannot drop the cache here");
        }
        cold_cache = Some(page_cache_bytes(&file, len)?);
    }
    let t0 = Instant::now();
    let (model, _tok) = onebit_engine::format::load_with(&a.model, &load_options(a.load))?;
    let load_secs = t0.elapsed().as_secs_f64();
    let hwm_load = status_bytes("VmHWM").unwrap_or(0);
    let checksum = touch_weights(&model);
    let secs = t0.elapsed().as_secs_f64();
    let cache = page_cache_bytes(&file, len)?;
    let hwm = status_bytes("VmHWM").unwrap_or(0);
    let line = serde_json::json!({
        "method": a.load.name(),
        "cold": a.cold,
        "cache_before_bytes": cold_cache,
        "file_bytes": len,
        "load_seconds": load_secs,
        "seconds": secs,
        "checksum": checksum,
        "gb_per_s": len as f64 / secs / 1e9,
        "peak_rss_bytes": hwm,
        "peak_rss_at_load_return_bytes": hwm_load,
        "rss_anon_bytes": status_bytes("RssAnon"),
        "rss_shmem_bytes": status_bytes("RssShmem"),
        "rss_file_bytes": status_bytes("RssFile"),
        "page_cache_after_bytes": cache,
        "layers": model.config.n_layers,
    });
    println!("{line}");
    drop(model);
    Ok(())
}
