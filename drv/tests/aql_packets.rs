//! AQL packets byte for byte, and the CWSR arithmetic of reference §1.6.

use onebit_drv::emu::kfd::{topology, KfdEmu};
use onebit_drv::kfd::aql::{barrier_and_packet, dispatch_packet, header};
use onebit_drv::kfd::cwsr::CwsrSizes;
use onebit_drv::kfd::{DispatchArgs, FenceScope, KfdError, Packet};

fn raw_bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: reading the bytes of a plain #[repr(C)] value with no padding holes.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

#[test]
fn dispatch_packet_bytes() {
    let a = DispatchArgs {
        kernel_object: 0x1000_0040,
        kernarg_address: 0x2000_0010,
        grid: [256, 4, 1],
        workgroup: [64, 2, 1],
        group_segment_size: 1024,
        private_segment_size: 16,
        acquire: FenceScope::System,
        release: FenceScope::System,
        barrier: true,
    };
    let p = dispatch_packet(&a, 0x3000_0000).unwrap();
    #[rustfmt::skip]
    let want: [u8; 64] = [
        0x02, 0x15, 0x02, 0x00,  0x40, 0x00, 0x02, 0x00,  0x01, 0x00, 0x00, 0x00,  // header, setup=2D, wg 64x2x1
        0x00, 0x01, 0x00, 0x00,  0x04, 0x00, 0x00, 0x00,  0x01, 0x00, 0x00, 0x00,  // grid 256x4x1
        0x10, 0x00, 0x00, 0x00,  0x00, 0x04, 0x00, 0x00,                          // private 16, group 1024
        0x40, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00,                           // kernel_object
        0x10, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00,                           // kernarg
        0, 0, 0, 0, 0, 0, 0, 0,                                                   // reserved2
        0x00, 0x00, 0x00, 0x30, 0x00, 0x00, 0x00, 0x00,                           // completion signal
    ];
    assert_eq!(p.to_bytes(), want);
    let Packet::Dispatch(d) = p else { panic!() };
    assert_eq!(
        raw_bytes(&d),
        want.to_vec(),
        "struct layout = serialized bytes"
    );
}

#[test]
fn barrier_and_packet_bytes() {
    let p = barrier_and_packet(&[0xA0, 0xB0], 0xC0, FenceScope::System, FenceScope::Agent).unwrap();
    let mut want = [0u8; 64];
    want[0] = 0x03;
    want[1] = 0x0D; // type 3 | barrier | acquire system (2<<9) | release agent (1<<11)
    want[8] = 0xA0;
    want[16] = 0xB0;
    want[56] = 0xC0;
    assert_eq!(p.to_bytes(), want);
    let Packet::BarrierAnd(b) = p else { panic!() };
    assert_eq!(raw_bytes(&b), want.to_vec());
    assert!(barrier_and_packet(&[1; 6], 0, FenceScope::None, FenceScope::None).is_err());
}

#[test]
fn headers_and_dimensions() {
    assert_eq!(header(2, false, FenceScope::None, FenceScope::None), 2);
    assert_eq!(
        header(2, true, FenceScope::Agent, FenceScope::System),
        2 | 0x100 | 0x200 | 0x1000
    );
    let mut a = DispatchArgs::linear(64, 16, 10, 10);
    assert_eq!(a.dimensions(), 1);
    a.grid[2] = 2;
    assert_eq!(a.dimensions(), 3);
}

#[test]
fn dispatch_validation_names_the_problem() {
    let ok = DispatchArgs::linear(0x1000, 0x2000, 64, 64);
    let cases = [
        (
            DispatchArgs {
                kernel_object: 0,
                ..ok
            },
            "kernel object",
        ),
        (
            DispatchArgs {
                kernel_object: 0x1004,
                ..ok
            },
            "64-byte aligned",
        ),
        (
            DispatchArgs {
                kernarg_address: 0x2008,
                ..ok
            },
            "16-byte aligned",
        ),
        (
            DispatchArgs {
                grid: [0, 1, 1],
                ..ok
            },
            "zero-sized",
        ),
        (
            DispatchArgs {
                workgroup: [1024, 2, 1],
                ..ok
            },
            "exceeds 1024",
        ),
    ];
    for (a, what) in cases {
        match dispatch_packet(&a, 0) {
            Err(KfdError::Invalid(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn cwsr_sizes_for_strix_halo() {
    let node = topology::gpu_node(&topology::strix_halo_files());
    let s = CwsrSizes::for_node(&node);
    assert_eq!(s.ctl_stack_size, 0x4000);
    assert_eq!(s.ctx_save_restore_size, 0x124_C000);
    assert_eq!(s.debug_memory_size, 0xA000);
    assert_eq!(s.bo_size, 0x125_6000);
    let l = CwsrSizes::legacy(&node);
    assert_eq!(l.ctx_save_restore_size, 0x4000 + 40 * 0x55000);
    assert_eq!(l.ctl_stack_size, s.ctl_stack_size);
    assert_eq!(KfdEmu::strix_halo().node().gfx_name(), "gfx1151");
}
