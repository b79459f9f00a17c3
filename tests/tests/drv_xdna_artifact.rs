//! The NPU kernel artifact format (kernels/npu/README.md): loading from disk and rejecting
//! what cannot run, each with an error that names the problem.

use std::path::PathBuf;

use onebit_drv::xclbin::{kind, IpData, IP_PS_KERNEL, ST_DPU};
use onebit_drv::xclbin_build::{
    aie_partition, ip_layout, npu_xclbin, ps_kernel_properties, XclbinBuilder,
};
use onebit_drv::xdna::artifact::{
    instruction_hash, ArtifactError, NpuKernelArtifact, MANIFEST_FILE,
};

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("onebit-xdna-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.0.join(name), bytes).unwrap();
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn manifest(extra: &str, args: &str) -> String {
    format!(
        r#"{{"format":"onebit-npu-kernel","version":1,"name":"k","xclbin":"final.xclbin","instructions":"insts.bin"{extra},
            "args":{args}}}"#
    )
}

const ARGS: &str = r#"[{"kind":"u64","value":3},{"kind":"u64","value":0},{"kind":"u32","value":0},
    {"kind":"buffer","name":"a","access":"read","bytes":64},{"kind":"buffer","name":"b","access":"write","bytes":32}]"#;

/// A transaction-framed instruction stream: 16-byte header (TxnSize = length) + ops.
fn txn(ops: u32, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    v[0..4].copy_from_slice(&[0, 1, 3, 6]); // major, minor, dev gen, rows
    v[4] = 4; // cols
    v[8..12].copy_from_slice(&ops.to_le_bytes());
    v[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    v
}

fn artifact_dir(tag: &str, manifest: &str, insts: &[u8]) -> TempDir {
    let d = TempDir::new(tag);
    d.write(MANIFEST_FILE, manifest.as_bytes());
    d.write("final.xclbin", &npu_xclbin([9; 16], &[0x11; 256], 2, 4096));
    d.write("insts.bin", insts);
    d
}

fn load_err(d: &TempDir) -> ArtifactError {
    NpuKernelArtifact::load(&d.0).unwrap_err()
}

#[test]
fn loads_a_valid_artifact() {
    let insts = txn(3, 64);
    let d = artifact_dir(
        "ok",
        &manifest(r#","instructions_format":"txn""#, ARGS),
        &insts,
    );
    for path in [d.0.clone(), d.0.join(MANIFEST_FILE)] {
        let a = NpuKernelArtifact::load(&path).unwrap();
        assert_eq!(a.dir, d.0);
        assert_eq!(a.columns(), 2);
        assert_eq!(a.partition.operations_per_cycle, 4096);
        assert_eq!(a.pdi, vec![0x11; 256]);
        assert_eq!(a.cu_func, 0);
        assert_eq!(a.instruction_hash, instruction_hash(&insts));
        let names: Vec<_> = a.buffers().map(|(n, _, b)| (n.to_owned(), b)).collect();
        assert_eq!(names, vec![("a".to_owned(), 64), ("b".to_owned(), 32)]);
        let w = a
            .arg_words(&[("b", 0x2000_0000_0004, 32), ("a", 0x1_0000_1000, 64)])
            .unwrap();
        assert_eq!(w.0, vec![3, 0, 0, 0, 0, 0x1000, 1, 4, 0x2000]);
        assert!(a
            .arg_words(&[("a", 0, 64)])
            .unwrap_err()
            .to_string()
            .contains("\"b\" is not bound"));
        assert!(a
            .arg_words(&[("a", 0, 8), ("b", 0, 32)])
            .unwrap_err()
            .to_string()
            .contains("needs 64 bytes"));
    }
}

#[test]
fn instruction_hash_is_fnv1a() {
    assert_eq!(instruction_hash(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(instruction_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn rejects_broken_manifests() {
    let d = TempDir::new("missing");
    let e = load_err(&d).to_string();
    assert!(e.contains("manifest.json"), "{e}");

    let d = artifact_dir("json", r#"{"format":"onebit-npu-kernel""#, &[0; 8]);
    assert!(matches!(load_err(&d), ArtifactError::Json { .. }));
    let d = artifact_dir(
        "unknown-field",
        &manifest(r#","colour":"red""#, ARGS),
        &[0; 8],
    );
    assert!(load_err(&d).to_string().contains("colour"));
    let d = artifact_dir(
        "format",
        &manifest("", ARGS).replace("onebit-npu-kernel", "xrt"),
        &[0; 8],
    );
    assert!(matches!(load_err(&d), ArtifactError::Format { .. }));
    let d = artifact_dir(
        "version",
        &manifest("", ARGS).replace("\"version\":1", "\"version\":2"),
        &[0; 8],
    );
    assert!(load_err(&d).to_string().contains("version 2"));
}

#[test]
fn rejects_bad_files() {
    let d = artifact_dir("no-insts", &manifest("", ARGS), &[0; 8]);
    std::fs::remove_file(d.0.join("insts.bin")).unwrap();
    let e = load_err(&d).to_string();
    assert!(e.contains("insts.bin"), "{e}");

    let d = artifact_dir("bad-xclbin", &manifest("", ARGS), &[0; 8]);
    d.write("final.xclbin", b"PK\x03\x04 not an xclbin");
    let e = load_err(&d).to_string();
    assert!(e.contains("final.xclbin") && e.contains("xclbin2"), "{e}");

    for (tag, insts, fmt, want) in [
        ("empty", vec![], "", "whole number"),
        ("odd", vec![0; 6], "", "whole number"),
        (
            "txn-short",
            vec![0; 8],
            r#","instructions_format":"txn""#,
            "16-byte",
        ),
        (
            "txn-size",
            txn(1, 64)[..60].to_vec(),
            r#","instructions_format":"txn""#,
            "says 64 bytes",
        ),
        (
            "txn-ops",
            txn(0, 32),
            r#","instructions_format":"txn""#,
            "0 operations",
        ),
    ] {
        let d = artifact_dir(tag, &manifest(fmt, ARGS), &insts);
        let e = load_err(&d).to_string();
        assert!(e.contains(want), "{tag}: {e}");
    }
}

#[test]
fn rejects_bad_arguments() {
    let buf = |n: &str, b: u32| {
        format!(r#"{{"kind":"buffer","name":"{n}","access":"read","bytes":{b}}}"#)
    };
    let many: Vec<String> = (0..14).map(|i| buf(&format!("b{i}"), 4)).collect();
    for (tag, args, want) in [
        ("too-many", format!("[{}]", many.join(",")), "at most 26"),
        (
            "dup",
            format!("[{},{}]", buf("x", 4), buf("x", 4)),
            "appears twice",
        ),
        ("zero", format!("[{}]", buf("x", 0)), "0 bytes"),
        (
            "none",
            r#"[{"kind":"u32","value":1}]"#.to_string(),
            "no buffer arguments",
        ),
        (
            "bad-kind",
            r#"[{"kind":"f32","value":1}]"#.to_string(),
            "f32",
        ),
    ] {
        let d = artifact_dir(tag, &manifest("", &args), &[0; 8]);
        let e = load_err(&d).to_string();
        assert!(e.contains(want), "{tag}: {e}");
    }
}

#[test]
fn picks_the_cu_function() {
    let part = onebit_drv::xclbin::Xclbin::parse(&npu_xclbin([1; 16], &[1; 64], 1, 2048))
        .unwrap()
        .aie_partition()
        .unwrap();
    let ip = |name: &str, functional: u8| IpData {
        ip_type: IP_PS_KERNEL,
        properties: ps_kernel_properties(ST_DPU, functional, 0x901),
        base_address: 0,
        name: name.into(),
    };
    let build = |ips: Option<Vec<IpData>>| {
        let mut b =
            XclbinBuilder::new([1; 16]).section(kind::AIE_PARTITION, "", aie_partition(&part));
        if let Some(ips) = ips {
            b = b.section(kind::IP_LAYOUT, "", ip_layout(&ips));
        }
        b.build()
    };
    let m = |extra: &str| serde_json::from_str(&manifest(extra, ARGS)).unwrap();
    let a = NpuKernelArtifact::from_parts(
        m(r#","kernel":"OTHER""#),
        &build(Some(vec![ip("MLIR_AIE:x", 0), ip("OTHER:y", 1)])),
        vec![0; 8],
    )
    .unwrap();
    assert_eq!(a.cu_func, 1);
    let e = NpuKernelArtifact::from_parts(m(""), &build(Some(vec![ip("OTHER:y", 1)])), vec![0; 8])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no PS kernel named \"MLIR_AIE\"") && e.contains("OTHER:y"),
        "{e}"
    );
    let e = NpuKernelArtifact::from_parts(m(""), &build(None), vec![0; 8])
        .unwrap_err()
        .to_string();
    assert!(e.contains("IP_LAYOUT") && e.contains("cu_func"), "{e}");
    let a = NpuKernelArtifact::from_parts(m(r#","cu_func":2"#), &build(None), vec![0; 8]).unwrap();
    assert_eq!(a.cu_func, 2);
}
