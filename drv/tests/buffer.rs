//! SharedBuffer and /dev/udmabuf on the emulator: chunking at the size cap, seals, limits,
//! and that the dma-buf pages are the CPU's pages.

use onebit_drv::buffer::BufferDescriptor;
use onebit_drv::buffer::{BufferError, SharedBuffer, Udmabuf};
use onebit_drv::emu::Emulator;

fn emu(limit_mb: u64) -> Emulator {
    Emulator::builder().with_udmabuf(limit_mb).build()
}

#[test]
fn small_buffer_is_one_chunk_and_aliases_cpu_memory() {
    let emu = emu(64);
    let io = emu.io();
    {
        let mut b = SharedBuffer::new(&io, "small", 10_000, BufferDescriptor::blob()).unwrap();
        assert_eq!(b.len(), 10_000);
        assert_eq!(b.mapped_len(), 12_288);
        assert_eq!(b.chunks().len(), 1);
        b.as_mut_slice()[..4].copy_from_slice(&[1, 2, 3, 4]);
        let db = emu.dmabuf(b.dmabuf_fds()[0]).unwrap();
        let view = db.map().unwrap();
        // SAFETY: the view is at least 4 bytes long.
        let got = unsafe { std::slice::from_raw_parts(view.ptr(), 4) };
        assert_eq!(got, &[1, 2, 3, 4]);
    }
    emu.assert_no_leaks();
}

#[test]
fn large_buffer_is_chunked_at_the_size_limit() {
    let emu = emu(1);
    let io = emu.io();
    {
        let b = SharedBuffer::new(&io, "big", (5 << 20) + 1, BufferDescriptor::blob()).unwrap();
        let sizes: Vec<u64> = b.chunks().iter().map(|c| c.size).collect();
        assert_eq!(
            sizes,
            vec![1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 4096]
        );
        let offs: Vec<u64> = b.chunks().iter().map(|c| c.offset).collect();
        assert_eq!(offs, vec![0, 1 << 20, 2 << 20, 3 << 20, 4 << 20, 5 << 20]);
        assert_eq!(b.addr() % (2 << 20), 0, "CPU mapping is 2 MiB aligned");
    }
    emu.assert_no_leaks();
}

#[test]
fn udmabuf_rejects_unsealed_unaligned_and_oversized() {
    let emu = emu(1);
    let io = emu.io();
    {
        let u = Udmabuf::open(&io).unwrap();
        assert_eq!(u.limits().size_limit, 1 << 20);
        let b = SharedBuffer::cpu_only(&io, "x", 4 << 20).unwrap();
        let e = u.create(b.memfd().unwrap(), 0, 2 << 20).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINVAL));
        assert!(e.to_string().contains("size_limit_mb"), "{e}");
        let e = u.create(b.memfd().unwrap(), 100, 4096).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINVAL));
        // A memfd without F_SEAL_SHRINK.
        let raw = io
            .memfd_create("unsealed", onebit_drv::io::MemfdFlags::ALLOW_SEALING)
            .unwrap();
        let unsealed = onebit_drv::io::Fd::from_raw(&io, raw);
        io.ftruncate(unsealed.raw(), 4096).unwrap();
        let e = u.create(&unsealed, 0, 4096).unwrap_err();
        assert!(e.to_string().contains("F_SEAL_SHRINK"), "{e}");
        // CREATE_LIST concatenates ranges into one dma-buf.
        let d = u
            .create_list(&[
                (b.memfd().unwrap(), 0, 4096),
                (b.memfd().unwrap(), 8192, 4096),
            ])
            .unwrap();
        assert_eq!(emu.dmabuf(d.raw()).unwrap().len(), 8192);
    }
    emu.assert_no_leaks();
}

#[test]
fn missing_udmabuf_is_a_clear_error() {
    let emu = Emulator::builder().build();
    let e = SharedBuffer::new(&emu.io(), "x", 4096, BufferDescriptor::blob()).unwrap_err();
    assert!(matches!(e, BufferError::Sys(_)));
    assert!(e.to_string().contains("modprobe udmabuf"), "{e}");
    assert!(matches!(
        SharedBuffer::cpu_only(&emu.io(), "x", 0),
        Err(BufferError::Empty)
    ));
    emu.assert_no_leaks();
}

#[test]
fn leaks_are_reported() {
    let emu = emu(64);
    let b = SharedBuffer::new(&emu.io(), "leaky", 4096, BufferDescriptor::blob()).unwrap();
    std::mem::forget(b);
    let leaks = emu.leaks();
    assert!(
        leaks.iter().any(|l| l.contains("memfd 'leaky'")),
        "{leaks:?}"
    );
    assert!(leaks.iter().any(|l| l.contains("dma-buf")), "{leaks:?}");
    assert!(
        leaks.iter().any(|l| l.contains("never unmapped")),
        "{leaks:?}"
    );
}

#[test]
fn too_many_chunks_is_refused_before_any_fd_is_made() {
    let emu = emu(1);
    // 4097 one-MiB chunks: over the fd budget. (Memfd pages are never touched.)
    let e = SharedBuffer::new(&emu.io(), "huge", 4097 << 20, BufferDescriptor::blob()).unwrap_err();
    assert!(
        matches!(e, BufferError::TooManyChunks { chunks: 4097, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("size_limit_mb"));
    emu.assert_no_leaks();
}
