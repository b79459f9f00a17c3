//! The sysfs topology the emulated KFD serves (the fixture trees in `drv/testdata`).

use std::path::PathBuf;

use crate::topology::{parse_properties, Node, TOPOLOGY_ROOT};

macro_rules! tree {
    ($dir:literal: $($rel:literal),* $(,)?) => {
        vec![$((
            $rel,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/topology/", $dir, "/", $rel)),
        )),*]
    };
}

/// (path relative to the topology root, contents) of a Ryzen AI MAX+ 395 machine.
pub fn strix_halo_files() -> Vec<(&'static str, &'static str)> {
    tree!("strix_halo":
        "generation_id", "system_properties",
        "nodes/0/gpu_id", "nodes/0/name", "nodes/0/properties", "nodes/0/mem_banks/0/properties",
        "nodes/1/gpu_id", "nodes/1/name", "nodes/1/properties", "nodes/1/mem_banks/0/properties",
    )
}

/// (path relative to the topology root, contents) of a machine with an RX 7900 XTX.
pub fn dgpu_files() -> Vec<(&'static str, &'static str)> {
    tree!("dgpu_rx7900xtx":
        "generation_id",
        "nodes/0/gpu_id", "nodes/0/name", "nodes/0/properties", "nodes/0/mem_banks/0/properties",
        "nodes/1/gpu_id", "nodes/1/name", "nodes/1/properties", "nodes/1/mem_banks/0/properties",
    )
}

/// Absolute sysfs paths for `files`.
pub fn absolute(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    files
        .iter()
        .map(|(rel, text)| (PathBuf::from(TOPOLOGY_ROOT).join(rel), (*text).to_owned()))
        .collect()
}

/// The GPU node (index 1) of `files`, parsed without going through a `KernelIo`.
pub fn gpu_node(files: &[(&str, &str)]) -> Node {
    let get = |rel: &str| {
        files
            .iter()
            .find(|(r, _)| *r == rel)
            .map(|(_, t)| *t)
            .unwrap_or("")
    };
    Node {
        index: 1,
        gpu_id: get("nodes/1/gpu_id").trim().parse().unwrap_or(0),
        name: get("nodes/1/name").trim().to_owned(),
        props: parse_properties(get("nodes/1/properties")),
        mem_banks: Vec::new(),
    }
}
