//! A dma-buf made outside the engine (as a camera or a video decoder would hand one over)
//! enters with its producer's descriptor: the iGPU (KFD) and the NPU (amdxdna) import it
//! when it is linear in a format they read, and refuse it, naming what is wrong, when its
//! modifier is tiled or its format does not match its elements. An unknown fourcc is
//! refused before any importer sees it.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use onebit_drv::buffer::{
    BufferDescriptor, BufferError, DescriptorError, DrmFourcc, Element, SharedBuffer,
};
use onebit_drv::emu::xdna::{XdnaEmu, XdnaEmuConfig, XdnaKernel, NODE};
use onebit_drv::emu::Emulator;
use onebit_drv::io::{Fd, KernelIo};
use onebit_drv::kfd::{Device, DeviceOptions, KfdError, SharedGpuBuffer};
use onebit_drv::sys::udmabuf as sys;
use onebit_drv::xdna::{SyncDir, XdnaDevice, XdnaError};

const LEN: usize = 64 << 10;

/// What the producer does: a sealed memfd of its own (made with libc, not through the
/// engine), filled with a frame, turned into a dma-buf with the raw UDMABUF_CREATE ioctl.
/// Returns the dma-buf and the frame's bytes.
fn producer_dmabuf(io: &Arc<dyn KernelIo>) -> (Fd, Vec<u8>) {
    // SAFETY: a NUL-terminated name and valid flags.
    let memfd = unsafe { libc::memfd_create(c"camera-frame".as_ptr(), libc::MFD_ALLOW_SEALING) };
    assert!(
        memfd >= 0,
        "memfd_create: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `memfd` is a fresh fd this function owns.
    let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
    let raw: RawFd = std::os::fd::AsRawFd::as_raw_fd(&memfd);
    let frame: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
    // SAFETY: `raw` is our memfd; `frame` is LEN readable bytes.
    unsafe {
        assert_eq!(libc::ftruncate(raw, LEN as i64), 0);
        assert_eq!(
            libc::pwrite(raw, frame.as_ptr().cast(), LEN, 0),
            LEN as isize
        );
        assert_eq!(libc::fcntl(raw, libc::F_ADD_SEALS, libc::F_SEAL_SHRINK), 0);
    }
    let dev = Fd::open(io, Path::new("/dev/udmabuf")).expect("open /dev/udmabuf");
    let mut a = sys::udmabuf_create {
        memfd: raw as u32,
        flags: sys::UDMABUF_FLAGS_CLOEXEC,
        offset: 0,
        size: LEN as u64,
    };
    // SAFETY: `udmabuf_create` holds no pointers.
    let fd =
        unsafe { sys::udmabuf_create(io.as_ref(), dev.raw(), &mut a) }.expect("UDMABUF_CREATE");
    // The dma-buf keeps the pages; the producer's memfd and device fd may close now.
    (Fd::from_raw(io, fd), frame)
}

fn tiled_r8() -> BufferDescriptor {
    // AMD_FMT_MOD | TILE_VERSION GFX9 | TILE 64K_S: how amdgpu's display path tiles.
    let amd_gfx9_64k_s = (0x02u64 << 56) | 1 | (9 << 8);
    BufferDescriptor::from_drm(DrmFourcc::R8 as u32, amd_gfx9_64k_s, Element::I8).unwrap()
}

#[test]
fn unknown_fourcc_is_refused_before_any_import() {
    let e = BufferDescriptor::from_drm(u32::from_le_bytes(*b"QQ12"), 0, Element::I8).unwrap_err();
    assert!(matches!(e, DescriptorError::UnknownFourcc { .. }), "{e:?}");
    assert!(e.to_string().contains("'QQ12'"), "{e}");
}

#[test]
fn npu_imports_a_linear_r8_dmabuf_from_outside_and_refuses_tiled_or_nv12() {
    for kernel in [XdnaKernel::Newer, XdnaKernel::Linux6_14] {
        npu_import_on(kernel);
    }
}

fn npu_import_on(kernel: XdnaKernel) {
    let npu = XdnaEmu::new(XdnaEmuConfig {
        kernel,
        ..Default::default()
    });
    let emu = npu.install(Emulator::builder().with_udmabuf(64)).build();
    let io = emu.io();
    {
        let dev = XdnaDevice::open(&io, Path::new(NODE)).unwrap();
        let (fd, frame) = producer_dmabuf(&io);
        let desc = BufferDescriptor::from_drm(DrmFourcc::R8 as u32, 0, Element::I8).unwrap();
        let buf = SharedBuffer::from_dmabuf(&io, "camera", fd, LEN, desc).unwrap();
        assert!(buf.memfd().is_none());
        assert_eq!(
            buf.as_slice(),
            &frame[..],
            "the CPU sees the producer's frame"
        );
        let imp = dev.import_shared(&buf).unwrap();
        // 6.14 has no PRIME import: a SHARE BO that SYNC_BO copies the frame into.
        assert_eq!(imp.copies(), kernel == XdnaKernel::Linux6_14, "{kernel:?}");
        let bo = imp.bos().next().unwrap();
        bo.sync(SyncDir::ToDevice, 0, LEN as u64).unwrap();
        assert_eq!(
            bo.as_slice().unwrap(),
            &frame[..],
            "the NPU's BO holds the producer's frame"
        );
        drop(imp);
        drop(buf);

        let (fd, _) = producer_dmabuf(&io);
        let buf = SharedBuffer::from_dmabuf(&io, "tiled", fd, LEN, tiled_r8()).unwrap();
        match dev.import_shared(&buf) {
            Err(XdnaError::Descriptor(e @ DescriptorError::UnsupportedModifier { .. })) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("amdxdna (NPU)")
                        && msg.contains("'tiled'")
                        && msg.contains("linear"),
                    "{msg}"
                );
            }
            other => panic!("a tiled dma-buf was not refused: {other:?}"),
        }
        drop(buf);

        let (fd, _) = producer_dmabuf(&io);
        let nv12 = BufferDescriptor::from_drm(DrmFourcc::Nv12 as u32, 0, Element::I8).unwrap();
        let buf = SharedBuffer::from_dmabuf(&io, "decoder", fd, LEN, nv12).unwrap();
        let e = dev.import_shared(&buf).unwrap_err();
        assert!(
            matches!(
                e,
                XdnaError::Descriptor(DescriptorError::UnsupportedFormat { .. })
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("NV12"), "{e}");
        drop(buf);
        drop(dev);
    }
    emu.assert_no_leaks();
}

#[test]
fn igpu_imports_a_linear_r8_dmabuf_from_outside_and_refuses_tiled() {
    let (emu, _kfd) = Emulator::strix_halo();
    let io = emu.io();
    {
        let dev = Device::open(&io, &DeviceOptions::default()).unwrap();
        let (fd, frame) = producer_dmabuf(&io);
        let desc = BufferDescriptor::int8();
        let buf = SharedBuffer::from_dmabuf(&io, "camera", fd, LEN, desc).unwrap();
        let g = SharedGpuBuffer::import(&dev, buf).unwrap();
        assert_eq!(g.descriptor(), &desc);
        assert_eq!(g.name(), "camera");
        assert_eq!(g.as_slice(), &frame[..]);
        assert!(g.gpu_va() != 0);
        drop(g);

        let (fd, _) = producer_dmabuf(&io);
        let buf = SharedBuffer::from_dmabuf(&io, "tiled", fd, LEN, tiled_r8()).unwrap();
        match SharedGpuBuffer::import(&dev, buf) {
            Err(KfdError::Buffer(BufferError::Descriptor(
                e @ DescriptorError::UnsupportedModifier { .. },
            ))) => assert!(e.to_string().contains("KFD (iGPU)"), "{e}"),
            other => panic!("a tiled dma-buf was not refused: {other:?}"),
        }

        // The engine's own buffers are checked the same way, before any fallback.
        let e = SharedGpuBuffer::new(&dev, "tiled-own", 4096, tiled_r8()).unwrap_err();
        assert!(e.to_string().contains("not linear"), "{e}");
        drop(dev);
    }
    emu.assert_no_leaks();
}

#[test]
fn a_length_that_is_not_whole_pages_is_refused() {
    let (emu, _kfd) = Emulator::strix_halo();
    let io = emu.io();
    {
        let (fd, _) = producer_dmabuf(&io);
        let e =
            SharedBuffer::from_dmabuf(&io, "odd", fd, 1000, BufferDescriptor::int8()).unwrap_err();
        assert!(matches!(e, BufferError::Foreign { .. }), "{e:?}");
        assert!(e.to_string().contains("'odd'"), "{e}");
    }
    emu.assert_no_leaks();
}

/// A memfd that already holds data (the model file's) is exported as it is: the CPU view
/// is the memfd's bytes from the given page on, read-only, and the chunks are its pages;
/// an offset inside a page is refused, as udmabuf exports whole pages.
#[test]
fn a_filled_memfd_is_exported_in_place_read_only() {
    use onebit_drv::buffer::Udmabuf;
    let emu = Emulator::builder().with_udmabuf(64).build();
    let io = emu.io();
    {
        let page = onebit_drv::page_size() as usize;
        let len = 3 * page;
        // SAFETY: a NUL-terminated name and valid flags.
        let memfd = unsafe { libc::memfd_create(c"model-file".as_ptr(), libc::MFD_ALLOW_SEALING) };
        assert!(memfd >= 0);
        // SAFETY: `memfd` is a fresh fd this test owns.
        let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
        let raw: RawFd = std::os::fd::AsRawFd::as_raw_fd(&memfd);
        let bytes: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
        // SAFETY: `raw` is our memfd; `bytes` is `len` readable bytes.
        unsafe {
            assert_eq!(libc::ftruncate(raw, len as i64), 0);
            assert_eq!(
                libc::pwrite(raw, bytes.as_ptr().cast(), len, 0),
                len as isize
            );
            assert_eq!(libc::fcntl(raw, libc::F_ADD_SEALS, libc::F_SEAL_SHRINK), 0);
        }
        let udmabuf = Udmabuf::open(&io).expect("udmabuf");
        let blob = BufferDescriptor::blob();
        let buf =
            SharedBuffer::from_memfd(&io, &udmabuf, "in-place", raw, page as u64, 2 * page, blob)
                .expect("exported");
        assert_eq!(
            buf.as_slice(),
            &bytes[page..],
            "the memfd's own bytes, from the offset"
        );
        assert!(!buf.is_writable());
        assert_eq!(buf.memfd_offset(), page as u64);
        assert_eq!(buf.chunks().len(), 1);
        let dmabuf = emu.dmabuf(buf.chunks()[0].dmabuf.raw()).expect("a udmabuf");
        assert_eq!(dmabuf.len(), 2 * page as u64);

        let e = SharedBuffer::from_memfd(&io, &udmabuf, "in-place", raw, 100, page, blob)
            .expect_err("an offset inside a page");
        assert!(matches!(e, BufferError::Foreign { .. }), "{e}");
        drop(buf);
    }
    emu.assert_no_leaks();
}
