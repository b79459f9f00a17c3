//! KFD topology from sysfs (`/sys/devices/virtual/kfd/kfd/topology`): which GPUs exist,
//! their gfx target, compute geometry, memory banks and render node.

mod node;

use std::path::{Path, PathBuf};

use crate::io::KernelIo;
pub use node::{HeapType, MemBank, Node};

/// Root of the KFD topology in sysfs.
pub const TOPOLOGY_ROOT: &str = "/sys/devices/virtual/kfd/kfd/topology";

/// Errors reading the topology.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// There is no KFD on this machine.
    #[error(
        "{TOPOLOGY_ROOT} is absent: no amdkfd driver is loaded (no AMD GPU, or amdgpu not \
         loaded); on Strix Halo check `lsmod | grep amdgpu` and the kernel log"
    )]
    NoKfd,
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No node is a GPU.
    #[error("KFD topology lists no GPU node (only CPU nodes); is the GPU bound to amdgpu?")]
    NoGpu,
    /// No GPU matches the request.
    #[error("no GPU node with gfx target {wanted}; found: {found}")]
    NoMatch {
        /// What was asked for.
        wanted: String,
        /// What exists.
        found: String,
    },
}

/// All nodes of the topology.
#[derive(Debug, Clone)]
pub struct Topology {
    /// `generation_id` (bumps on hotplug).
    pub generation_id: Option<u64>,
    /// Nodes in index order, CPU nodes included.
    pub nodes: Vec<Node>,
}

impl Topology {
    /// Reads the whole tree; re-reads once if `generation_id` changed meanwhile.
    pub fn read(io: &dyn KernelIo) -> Result<Topology, TopologyError> {
        Self::read_at(io, Path::new(TOPOLOGY_ROOT))
    }

    /// Reads a tree rooted somewhere else (fixtures).
    pub fn read_at(io: &dyn KernelIo, root: &Path) -> Result<Topology, TopologyError> {
        if !io.exists(root) {
            return Err(TopologyError::NoKfd);
        }
        for _ in 0..3 {
            let before = generation(io, root);
            let t = Self::read_once(io, root, before)?;
            if generation(io, root) == before {
                return Ok(t);
            }
            tracing::debug!("KFD topology changed while reading; retrying");
        }
        Self::read_once(io, root, generation(io, root))
    }

    fn read_once(
        io: &dyn KernelIo,
        root: &Path,
        generation_id: Option<u64>,
    ) -> Result<Topology, TopologyError> {
        let dir = root.join("nodes");
        let names = io.read_dir(&dir).map_err(|source| TopologyError::Read {
            path: dir.clone(),
            source,
        })?;
        let mut idx: Vec<u32> = names.iter().filter_map(|n| n.parse().ok()).collect();
        idx.sort_unstable();
        let nodes = idx
            .into_iter()
            .map(|i| Node::read(io, &dir.join(i.to_string()), i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Topology {
            generation_id,
            nodes,
        })
    }

    /// GPU nodes (gpu_id != 0).
    pub fn gpus(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.is_gpu())
    }

    /// The first GPU whose LLVM target name is `gfx` (e.g. "gfx1151"), or the first GPU
    /// when `gfx` is None.
    pub fn pick_gpu(&self, gfx: Option<&str>) -> Result<&Node, TopologyError> {
        let mut gpus = self.gpus().peekable();
        if gpus.peek().is_none() {
            return Err(TopologyError::NoGpu);
        }
        match gfx {
            None => Ok(self.gpus().next().expect("checked non-empty")),
            Some(want) => {
                self.gpus()
                    .find(|n| n.gfx_name() == want)
                    .ok_or_else(|| TopologyError::NoMatch {
                        wanted: want.to_owned(),
                        found: self
                            .gpus()
                            .map(|n| n.gfx_name())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }
    }
}

fn generation(io: &dyn KernelIo, root: &Path) -> Option<u64> {
    io.read_to_string(&root.join("generation_id"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Parses `key value` lines; lines that are not `word number` are skipped.
pub fn parse_properties(text: &str) -> std::collections::BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (k, v) = (it.next()?, it.next()?);
            let v = if let Some(h) = v.strip_prefix("0x") {
                u64::from_str_radix(h, 16).ok()?
            } else {
                v.parse().ok()?
            };
            Some((k.to_owned(), v))
        })
        .collect()
}
