//! Topology parsing from the fixture trees (directly from disk and through the emulator).

use std::path::PathBuf;

use onebit_drv::emu::Emulator;
use onebit_drv::io::RealIo;
use onebit_drv::topology::{HeapType, Topology, TopologyError};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/topology")
        .join(name)
}

#[test]
fn strix_halo_tree() {
    let t = Topology::read_at(&RealIo, &fixture("strix_halo")).unwrap();
    assert_eq!(t.generation_id, Some(1));
    assert_eq!(t.nodes.len(), 2);
    assert!(!t.nodes[0].is_gpu());
    let g = t.pick_gpu(Some("gfx1151")).unwrap();
    assert_eq!(g.gpu_id, 45707);
    assert_eq!(g.gfx_target_version(), 110501);
    assert_eq!(g.cu_count(), 40);
    assert_eq!(g.wave_size(), 32);
    assert_eq!(g.lds_bytes(), 65536);
    assert_eq!(g.waves_per_cu(), 32);
    assert_eq!(g.num_xcc(), 1);
    assert_eq!(g.doorbell_type(), 2);
    assert_eq!(g.render_node().as_deref(), Some("/dev/dri/renderD128"));
    assert_eq!(g.vram_bytes(), 512 << 20);
    assert_eq!(g.mem_banks[0].heap_type, HeapType::FbPublic);
    assert!(g.looks_like_apu());
    // Unknown keys are kept, malformed lines skipped.
    assert_eq!(g.prop("some_future_key"), 12345);
    assert!(!g.props.contains_key("malformed"));
}

#[test]
fn discrete_gpu_tree() {
    let t = Topology::read_at(&RealIo, &fixture("dgpu_rx7900xtx")).unwrap();
    let g = t.pick_gpu(None).unwrap();
    assert_eq!(g.gfx_name(), "gfx1100");
    assert_eq!(g.cu_count(), 96);
    assert_eq!(g.vram_bytes(), 25_753_026_560);
    assert_eq!(g.render_node().as_deref(), Some("/dev/dri/renderD129"));
    assert!(!g.looks_like_apu());
    match t.pick_gpu(Some("gfx1151")) {
        Err(e @ TopologyError::NoMatch { .. }) => {
            assert!(e.to_string().contains("found: gfx1100"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn through_the_emulator_and_without_kfd() {
    let (emu, _kfd) = Emulator::strix_halo();
    let t = Topology::read(emu.io().as_ref()).unwrap();
    assert_eq!(t.gpus().count(), 1);
    let bare = Emulator::builder().build();
    let e = Topology::read(bare.io().as_ref()).unwrap_err();
    assert!(matches!(e, TopologyError::NoKfd));
    assert!(e.to_string().contains("amdgpu"));
}
