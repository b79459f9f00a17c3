//! The emulated KFD refuses, at the ioctl level, what the kernel refuses: these tests talk
//! to it through the raw `sys` functions, as a buggy driver would.

use onebit_drv::buffer::BufferDescriptor;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Arc;

use onebit_drv::emu::Emulator;
use onebit_drv::io::KernelIo;
use onebit_drv::sys::kfd::*;

struct P {
    io: Arc<dyn KernelIo>,
    kfd: RawFd,
    render: RawFd,
    gpu: u32,
}

fn errno<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

impl P {
    fn new(emu: &Emulator, gpu: u32) -> P {
        let io = emu.io();
        let kfd = io.open(Path::new("/dev/kfd"), libc::O_RDWR).unwrap();
        let render = io
            .open(Path::new("/dev/dri/renderD128"), libc::O_RDWR)
            .unwrap();
        let mut a = kfd_ioctl_acquire_vm_args {
            drm_fd: render as u32,
            gpu_id: gpu,
        };
        // SAFETY: no pointers.
        unsafe { acquire_vm(io.as_ref(), kfd, &mut a) }.unwrap();
        P {
            io,
            kfd,
            render,
            gpu,
        }
    }

    fn alloc(&self, va: u64, size: u64, flags: u32) -> std::io::Result<(u64, u64)> {
        let mut a = kfd_ioctl_alloc_memory_of_gpu_args {
            va_addr: va,
            size,
            gpu_id: self.gpu,
            flags,
            ..Default::default()
        };
        // SAFETY: no pointers for GTT allocations.
        unsafe { alloc_memory_of_gpu(self.io.as_ref(), self.kfd, &mut a) }
            .map(|_| (a.handle, a.mmap_offset))
    }

    fn map(&self, handle: u64, on: bool) -> std::io::Result<i32> {
        let mut ids = [self.gpu];
        let mut a = kfd_ioctl_map_memory_to_gpu_args {
            handle,
            device_ids_array_ptr: ids.as_mut_ptr() as u64,
            n_devices: 1,
            n_success: 0,
        };
        // SAFETY: `ids` holds n_devices entries.
        unsafe {
            if on {
                map_memory_to_gpu(self.io.as_ref(), self.kfd, &mut a)
            } else {
                unmap_memory_from_gpu(self.io.as_ref(), self.kfd, &mut a)
            }
        }
    }

    fn free(&self, handle: u64) -> std::io::Result<i32> {
        let mut a = kfd_ioctl_free_memory_of_gpu_args { handle };
        // SAFETY: no pointers.
        unsafe { free_memory_of_gpu(self.io.as_ref(), self.kfd, &mut a) }
    }

    fn close(self) {
        self.io.close(self.kfd).unwrap();
        self.io.close(self.render).unwrap();
    }
}

const GTT: u32 = KFD_IOC_ALLOC_MEM_FLAGS_GTT | KFD_IOC_ALLOC_MEM_FLAGS_WRITABLE;
const VA: u64 = 0x7000_0000_0000;

#[test]
fn memory_rules() {
    let (emu, kfd) = Emulator::strix_halo();
    let p = P::new(&emu, kfd.node().gpu_id);
    assert_eq!(
        errno(p.alloc(VA, 1000, GTT)),
        libc::EINVAL,
        "unaligned size"
    );
    assert_eq!(
        errno(p.alloc(VA + 12, 4096, GTT)),
        libc::EINVAL,
        "unaligned VA"
    );
    assert_eq!(
        errno(p.alloc(
            VA,
            4096,
            KFD_IOC_ALLOC_MEM_FLAGS_GTT | KFD_IOC_ALLOC_MEM_FLAGS_VRAM
        )),
        libc::EINVAL
    );
    let (h, off) = p.alloc(VA, 8192, GTT).unwrap();
    assert_eq!(
        errno(p.alloc(VA + 4096, 4096, GTT)),
        libc::EINVAL,
        "overlapping VA"
    );
    assert_eq!(
        errno(p.map(h, false)),
        libc::EINVAL,
        "unmap of an unmapped BO"
    );
    p.map(h, true).unwrap();
    assert_eq!(errno(p.free(h)), libc::EBUSY, "free while mapped");
    // mmap: only offsets the kernel handed out.
    let io = &p.io;
    // SAFETY: fresh mappings, not MAP_FIXED.
    unsafe {
        let bad = io.mmap(
            std::ptr::null_mut(),
            4096,
            3,
            libc::MAP_SHARED,
            p.render,
            off + (1 << 36),
        );
        assert_eq!(errno(bad), libc::EINVAL, "unknown render offset");
        let bad = io.mmap(
            std::ptr::null_mut(),
            4096,
            3,
            libc::MAP_SHARED,
            p.kfd,
            0x1234_0000,
        );
        assert_eq!(errno(bad), libc::EINVAL, "unknown kfd offset");
        let big = io.mmap(
            std::ptr::null_mut(),
            3 * 4096,
            3,
            libc::MAP_SHARED,
            p.render,
            off,
        );
        assert_eq!(errno(big), libc::EINVAL, "mapping past the BO");
        let ok = io
            .mmap(
                std::ptr::null_mut(),
                8192,
                3,
                libc::MAP_SHARED,
                p.render,
                off,
            )
            .unwrap();
        io.munmap(ok, 8192).unwrap();
    }
    p.map(h, false).unwrap();
    p.free(h).unwrap();
    assert_eq!(errno(p.free(h)), libc::EINVAL, "double free");
    assert_eq!(errno(p.map(h, true)), libc::EINVAL, "use after free");
    p.close();
    emu.assert_no_leaks();
}

#[test]
fn queue_rules() {
    let (emu, kfd) = Emulator::strix_halo();
    let p = P::new(&emu, kfd.node().gpu_id);
    let ring = p.alloc(VA, 8192, GTT).unwrap().0;
    let ctl = p.alloc(VA + 0x10000, 4096, GTT).unwrap().0;
    let eop = p.alloc(VA + 0x20000, 4096, GTT).unwrap().0;
    for h in [ring, ctl, eop] {
        p.map(h, true).unwrap();
    }
    let base = kfd_ioctl_create_queue_args {
        ring_base_address: VA,
        write_pointer_address: VA + 0x10000 + 56,
        read_pointer_address: VA + 0x10000 + 128,
        ring_size: 8192,
        gpu_id: p.gpu,
        queue_type: KFD_IOC_QUEUE_TYPE_COMPUTE_AQL,
        queue_percentage: 100,
        queue_priority: 7,
        eop_buffer_address: VA + 0x20000,
        eop_buffer_size: 4096,
        ..Default::default()
    };
    let create = |mut a: kfd_ioctl_create_queue_args| {
        // SAFETY: no pointers.
        unsafe { create_queue(p.io.as_ref(), p.kfd, &mut a) }
    };
    // CWSR area absent: refused (as the buffer checks of current kernels do).
    assert_eq!(errno(create(base)), libc::EINVAL);
    let cases = [
        (
            "ring size != ring BO size",
            kfd_ioctl_create_queue_args {
                ring_size: 4096,
                ..base
            },
        ),
        (
            "ring size not a power of two",
            kfd_ioctl_create_queue_args {
                ring_size: 6000,
                ..base
            },
        ),
        (
            "unmapped ring",
            kfd_ioctl_create_queue_args {
                ring_base_address: VA + 0x40000,
                ..base
            },
        ),
        (
            "unmapped rptr",
            kfd_ioctl_create_queue_args {
                read_pointer_address: VA + 0x50000,
                ..base
            },
        ),
        (
            "wptr outside the first page",
            kfd_ioctl_create_queue_args {
                write_pointer_address: VA + 4096,
                ..base
            },
        ),
        (
            "wrong EOP size",
            kfd_ioctl_create_queue_args {
                eop_buffer_size: 8192,
                ..base
            },
        ),
        (
            "PM4 queue",
            kfd_ioctl_create_queue_args {
                queue_type: KFD_IOC_QUEUE_TYPE_COMPUTE,
                ..base
            },
        ),
        (
            "priority 16",
            kfd_ioctl_create_queue_args {
                queue_priority: 16,
                ..base
            },
        ),
    ];
    for (what, a) in cases {
        assert_eq!(errno(create(a)), libc::EINVAL, "{what}");
    }
    // Unknown events.
    let mut w = kfd_ioctl_destroy_event_args {
        event_id: 77,
        pad: 0,
    };
    // SAFETY: no pointers.
    let r = unsafe { destroy_event(p.io.as_ref(), p.kfd, &mut w) };
    assert_eq!(errno(r), libc::EINVAL);
    // KFD ioctls on the render node are unknown there.
    let mut v = kfd_ioctl_get_version_args::default();
    // SAFETY: no pointers.
    let r = unsafe { get_version(p.io.as_ref(), p.render, &mut v) };
    assert_eq!(errno(r), libc::ENOTTY);
    for h in [ring, ctl, eop] {
        p.map(h, false).unwrap();
        p.free(h).unwrap();
    }
    p.close();
    emu.assert_no_leaks();
}

#[test]
fn closing_kfd_with_live_handles_is_reported_as_a_leak() {
    let (emu, kfd) = Emulator::strix_halo();
    let p = P::new(&emu, kfd.node().gpu_id);
    let h = p.alloc(VA, 4096, GTT).unwrap().0;
    p.map(h, true).unwrap();
    p.close();
    let leaks = emu.leaks();
    assert_eq!(leaks.len(), 1, "{leaks:?}");
    assert!(
        leaks[0].contains("(still GPU-mapped) never freed before /dev/kfd was closed"),
        "{leaks:?}"
    );
}

#[test]
fn one_vm_binding_one_event_page_and_the_runtime_enable_bit_per_process() {
    let (emu, kfd) = Emulator::strix_halo();
    let p = P::new(&emu, kfd.node().gpu_id);
    // kfd_ioctl_acquire_vm: the same render file again is fine, another one is EBUSY.
    let mut same = kfd_ioctl_acquire_vm_args {
        drm_fd: p.render as u32,
        gpu_id: p.gpu,
    };
    // SAFETY: no pointers.
    unsafe { acquire_vm(p.io.as_ref(), p.kfd, &mut same) }.unwrap();
    let render2 =
        p.io.open(Path::new("/dev/dri/renderD128"), libc::O_RDWR)
            .unwrap();
    let mut other = kfd_ioctl_acquire_vm_args {
        drm_fd: render2 as u32,
        gpu_id: p.gpu,
    };
    // SAFETY: no pointers.
    let r = unsafe { acquire_vm(p.io.as_ref(), p.kfd, &mut other) };
    assert_eq!(errno(r), libc::EBUSY);
    p.io.close(render2).unwrap();

    // kfd_kmap_event_page: a second event page is EINVAL.
    let page = |va| p.alloc(va, 32 << 10, GTT).unwrap().0;
    let (first, second) = (page(VA), page(VA + (1 << 20)));
    let event = |offset: u64| {
        let mut a = kfd_ioctl_create_event_args {
            event_page_offset: offset,
            event_type: KFD_IOC_EVENT_SIGNAL,
            ..Default::default()
        };
        // SAFETY: no pointers.
        unsafe { create_event(p.io.as_ref(), p.kfd, &mut a) }.map(|_| a.event_id)
    };
    let id = event(first).unwrap();
    assert_eq!(errno(event(second)), libc::EINVAL);
    let mut d = kfd_ioctl_destroy_event_args {
        event_id: id,
        pad: 0,
    };
    // SAFETY: no pointers.
    unsafe { destroy_event(p.io.as_ref(), p.kfd, &mut d) }.unwrap();
    p.free(second).unwrap();

    // kfd_ioctl_runtime_enable: all-zero arguments disable; the enable bit enables once.
    let runtime = |mode_mask| {
        let mut a = kfd_ioctl_runtime_enable_args {
            mode_mask,
            ..Default::default()
        };
        // SAFETY: no pointers.
        unsafe { runtime_enable(p.io.as_ref(), p.kfd, &mut a) }
    };
    runtime(0).unwrap();
    assert!(!kfd.runtime_enabled());
    runtime(KFD_RUNTIME_ENABLE_MODE_ENABLE_MASK).unwrap();
    assert!(kfd.runtime_enabled());
    assert_eq!(
        errno(runtime(KFD_RUNTIME_ENABLE_MODE_ENABLE_MASK)),
        libc::EBUSY
    );
    p.close();
}

#[test]
fn a_dmabuf_import_at_a_taken_address_fails_at_map_not_import() {
    use onebit_drv::buffer::SharedBuffer;
    let (emu, kfd) = Emulator::strix_halo();
    let p = P::new(&emu, kfd.node().gpu_id);
    let (taken, _) = p.alloc(VA, 1 << 20, GTT).unwrap();
    p.map(taken, true).unwrap();
    let buf = SharedBuffer::new(&p.io, "b", 1 << 20, BufferDescriptor::blob()).unwrap();
    let mut a = kfd_ioctl_import_dmabuf_args {
        va_addr: VA,
        gpu_id: p.gpu,
        dmabuf_fd: buf.dmabuf_fds()[0] as u32,
        ..Default::default()
    };
    // SAFETY: no pointers.
    unsafe { import_dmabuf(p.io.as_ref(), p.kfd, &mut a) }.unwrap();
    assert_eq!(errno(p.map(a.handle, true)), libc::EINVAL);
    p.free(a.handle).unwrap();
    p.map(taken, false).unwrap();
    p.free(taken).unwrap();
    drop(buf);
    p.close();
    emu.assert_no_leaks();
}
