//! The weights' sealed memfd: the loader reads a GGUF file into it (io_uring O_DIRECT, or
//! pread), seals it SHRINK|GROW|SEAL and maps it read-only. Resizing and further sealing
//! fail with EPERM, the CPU cannot write through its mapping, the memfd still becomes a
//! udmabuf (the emulator rules as drivers/dma-buf/udmabuf.c does), the three load methods
//! give the same logits bit for bit, and a refused io_uring falls back to pread.

use onebit_drv::buffer::Udmabuf;
use onebit_drv::emu::Emulator;
use onebit_drv::io::{Fd, KernelIo};
use onebit_engine::format::read_file::{read_sealed, LoadMethod, LoadOptions};
use onebit_engine::forward::{forward, LogitsMode, Session};
use onebit_engine::model::{Model, SealedFile};
use onebit_tests::fixture;
use std::path::PathBuf;
use std::sync::Arc;

/// The embedded model written to a real file (the temp dir; O_DIRECT where it allows),
/// removed when dropped.
struct ModelFile(PathBuf);

impl ModelFile {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ModelFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn embedded_file(tag: &str) -> ModelFile {
    let dir = std::env::temp_dir().join(format!("onebit-load-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("onebit-tiny.i2_s.gguf");
    std::fs::write(&p, onebit_engine::embedded::gguf_bytes()).unwrap();
    ModelFile(p)
}

fn sealed(tag: &str, method: LoadMethod, io: &Arc<dyn KernelIo>) -> SealedFile {
    let f = embedded_file(tag);
    let (s, report) = read_sealed(f.path(), method, io).unwrap();
    eprintln!("{tag}: loaded with {} ({:?})", report.used, report.fallback);
    assert_eq!(
        s.as_slice(),
        onebit_engine::embedded::gguf_bytes(),
        "{tag}: bytes differ"
    );
    s
}

fn errno_of(r: libc::c_int) -> Option<i32> {
    (r < 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

#[test]
fn sealed_weights_cannot_be_resized_or_resealed() {
    let s = sealed("resize", LoadMethod::Uring, &onebit_drv::io::real());
    let fd = s.raw_fd();
    // SAFETY: plain fcntl/ftruncate on our own memfd.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    assert_eq!(
        seals,
        libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        "the weights' memfd carries exactly SHRINK|GROW|SEAL"
    );
    let size = s.mapped_len() as libc::off_t;
    for len in [size + 4096, size - 4096, 0] {
        // SAFETY: as above.
        let r = unsafe { libc::ftruncate(fd, len) };
        assert_eq!(errno_of(r), Some(libc::EPERM), "ftruncate to {len}");
    }
    for seal in [
        libc::F_SEAL_WRITE,
        libc::F_SEAL_FUTURE_WRITE,
        libc::F_SEAL_SHRINK,
    ] {
        // SAFETY: as above.
        let r = unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seal) };
        assert_eq!(errno_of(r), Some(libc::EPERM), "adding seal {seal:#x}");
    }
}

#[test]
fn the_cpu_mapping_of_the_weights_is_read_only() {
    let s = sealed("prot", LoadMethod::Read, &onebit_drv::io::real());
    let addr = s.addr();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| {
            let range = l.split_whitespace().next().unwrap_or("");
            usize::from_str_radix(range.split('-').next().unwrap_or(""), 16) == Ok(addr)
        })
        .unwrap_or_else(|| panic!("no mapping at {addr:#x} in /proc/self/maps"));
    let perms = line.split_whitespace().nth(1).unwrap();
    assert_eq!(perms, "r--s", "mapping line: {line}");
    assert!(
        line.contains("memfd:onebit-weights"),
        "mapping line: {line}"
    );
    // A read-only descriptor's shared mapping can never become writable.
    // SAFETY: mprotect of our own mapping; on success nothing writes through it, and the
    // test fails anyway.
    let r = unsafe {
        libc::mprotect(
            addr as *mut libc::c_void,
            s.mapped_len(),
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
    assert_eq!(errno_of(r), Some(libc::EACCES), "mprotect(PROT_WRITE)");
}

#[test]
fn the_sealed_weights_become_a_udmabuf_on_the_emulator() {
    let emu = Emulator::builder().with_udmabuf(64).build();
    let io = emu.io();
    {
        let s = sealed("udmabuf", LoadMethod::Uring, &io);
        let udmabuf = Udmabuf::open(&io).unwrap();
        // SAFETY: dup of our own descriptor; the Fd owns the copy.
        let dup = unsafe { libc::dup(s.raw_fd()) };
        assert!(dup >= 0);
        let memfd = Fd::from_raw(&io, dup);
        let size = s.mapped_len() as u64;
        let dmabuf = udmabuf.create(&memfd, 0, size).unwrap();
        let b = emu.dmabuf(dmabuf.raw()).unwrap();
        assert_eq!(b.len(), size);

        // The emulator still refuses what udmabuf refuses: a write-sealed memfd.
        let m = memfd::MemfdOptions::default()
            .allow_sealing(true)
            .create("write-sealed")
            .unwrap();
        m.as_file().set_len(4096).unwrap();
        m.add_seals(&[memfd::FileSeal::SealShrink, memfd::FileSeal::SealWrite])
            .unwrap();
        // SAFETY: as above.
        let wdup = Fd::from_raw(&io, unsafe {
            libc::dup(std::os::fd::AsRawFd::as_raw_fd(&m))
        });
        let e = udmabuf.create(&wdup, 0, 4096).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    }
    emu.assert_no_leaks();
}

/// Logits of a prefill, then of a few greedy decode steps.
fn trace(model: &Model) -> Vec<Vec<f32>> {
    let prompt = [1u32, 17, 42, 99, 7, 3];
    let mut session = Session::new(model, 16);
    let mut out = vec![forward(model, &mut session, &prompt, LogitsMode::All).unwrap()];
    for _ in 0..4 {
        let last = out.last().unwrap();
        let next = onebit_engine::sampler::argmax(&last[last.len() - model.config.vocab_size..]);
        out.push(forward(model, &mut session, &[next], LogitsMode::Last).unwrap());
    }
    out
}

#[test]
fn uring_read_and_mmap_loads_give_the_same_logits() {
    let embedded = embedded_file("logits");
    let mut files = vec![("embedded".to_string(), embedded.path().to_path_buf())];
    for name in ["tiny-a.i2_s.gguf", "tiny-a.tq2_0.gguf", "tiny-a.tq1_0.gguf"] {
        if let Some(p) = fixture(&format!("tiny-a/{name}")) {
            files.push((name.to_string(), p));
        }
    }
    for (name, path) in files {
        let mut traces = Vec::new();
        for method in [LoadMethod::Mmap, LoadMethod::Read, LoadMethod::Uring] {
            let o = LoadOptions {
                method,
                ..LoadOptions::default()
            };
            let (mut model, _) = onebit_engine::format::load_with(&path, &o).unwrap();
            let dense = trace(&model);
            // Sparse down_proj frees the row-major pages (punched out of the memfd).
            model.use_sparse_down();
            assert_eq!(
                bits(&dense),
                bits(&trace(&model)),
                "{name} via {method}: sparse down_proj changed the logits"
            );
            traces.push((method, dense));
        }
        for (method, t) in &traces[1..] {
            assert_eq!(
                bits(&traces[0].1),
                bits(t),
                "{name}: logits via {method} differ from mmap"
            );
        }
    }
}

fn bits(t: &[Vec<f32>]) -> Vec<Vec<u32>> {
    t.iter()
        .map(|v| v.iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// Makes `io_uring_setup` fail with EPERM on this thread, as a seccomp profile that
/// forbids io_uring does (Docker's default profile since 25.0, for instance).
fn forbid_io_uring_on_this_thread() {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let mut prog = [
        stmt(ld, 4), // seccomp_data.arch
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ld, 0), // seccomp_data.nr
        jeq(libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: prctl with a valid filter program that lives for the call; the filter only
    // applies to this (test) thread and the threads it starts.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog
            ),
            0,
            "installing the seccomp filter: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn a_refused_io_uring_falls_back_to_pread_and_says_why() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("SKIP: the seccomp filter here is written for x86_64");
        return;
    }
    let f = embedded_file("seccomp");
    let p = f.path().to_path_buf();
    let io = onebit_drv::io::real();
    let (bytes, report) = std::thread::spawn(move || {
        forbid_io_uring_on_this_thread();
        let (s, report) = read_sealed(&p, LoadMethod::Uring, &io).unwrap();
        (s.as_slice().to_vec(), report)
    })
    .join()
    .unwrap();
    assert_eq!(bytes, onebit_engine::embedded::gguf_bytes());
    assert_eq!(report.used, LoadMethod::Read);
    let why = report.fallback.expect("the fallback gives its reason");
    assert!(
        why.contains("io_uring_setup") && why.contains("seccomp"),
        "reason: {why}"
    );
}
