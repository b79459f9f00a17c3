//! Writes xclbins: the inverse of [`crate::xclbin`], for test fixtures and for the emulator's
//! self-test kernels (no IRON/Peano toolchain is needed to produce a well-formed container).
//! The layout follows Xilinx/XRT `xclbin.h`; the reader checks what this writes.

use crate::xclbin::{
    AiePartition, IpData, MemData, AXLF_HEADER_OFFSET, AXLF_MAGIC, AXLF_SECTIONS_OFFSET,
    AXLF_SECTION_HEADER_SIZE,
};

/// Collects sections and lays out an axlf container.
#[derive(Clone, Debug, Default)]
pub struct XclbinBuilder {
    uuid: [u8; 16],
    sections: Vec<(u32, String, Vec<u8>)>,
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

fn align8(v: &mut Vec<u8>) {
    v.resize(v.len().next_multiple_of(8), 0);
}

fn u32_of(n: usize) -> u32 {
    u32::try_from(n).expect("xclbin_build: section larger than 4 GiB")
}

impl XclbinBuilder {
    pub fn new(uuid: [u8; 16]) -> Self {
        XclbinBuilder {
            uuid,
            sections: Vec::new(),
        }
    }

    /// Appends a section (names longer than 15 bytes are cut).
    pub fn section(mut self, kind: u32, name: &str, data: Vec<u8>) -> Self {
        self.sections.push((kind, name.to_string(), data));
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let table = AXLF_SECTIONS_OFFSET + self.sections.len() * AXLF_SECTION_HEADER_SIZE;
        let mut out = vec![0u8; table];
        align8(&mut out);
        put(&mut out, 0, AXLF_MAGIC);
        put(&mut out, 8, &(-1i32).to_le_bytes());
        out[12..40].fill(0xff);
        let h = AXLF_HEADER_OFFSET;
        put(&mut out, h + 24, &0u16.to_le_bytes()); // versionPatch
        out[h + 26] = 2; // versionMajor
        out[h + 27] = 1; // versionMinor
        put(&mut out, h + 112, &self.uuid);
        put(
            &mut out,
            h + 144,
            &u32_of(self.sections.len()).to_le_bytes(),
        );
        for (i, (kind, name, data)) in self.sections.iter().enumerate() {
            let offset = out.len();
            out.extend_from_slice(data);
            align8(&mut out);
            let at = AXLF_SECTIONS_OFFSET + i * AXLF_SECTION_HEADER_SIZE;
            put(&mut out, at, &kind.to_le_bytes());
            let n = name.as_bytes();
            put(&mut out, at + 4, &n[..n.len().min(15)]);
            put(&mut out, at + 24, &(offset as u64).to_le_bytes());
            put(&mut out, at + 32, &(data.len() as u64).to_le_bytes());
        }
        let len = out.len() as u64;
        put(&mut out, h, &len.to_le_bytes());
        out
    }
}

/// A section body under construction: fixed header first, variable parts appended, every
/// `array_offset` and `mpo_*` relative to the section start.
struct Body(Vec<u8>);

impl Body {
    fn append(&mut self, bytes: &[u8]) -> u32 {
        align8(&mut self.0);
        let at = u32_of(self.0.len());
        self.0.extend_from_slice(bytes);
        at
    }
    fn string(&mut self, s: &str) -> u32 {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.append(&b)
    }
    fn set(&mut self, at: usize, bytes: &[u8]) {
        put(&mut self.0, at, bytes);
    }
    fn set_array(&mut self, at: usize, count: usize, offset: u32) {
        self.set(at, &u32_of(count).to_le_bytes());
        self.set(at + 4, &offset.to_le_bytes());
    }
}

/// Encodes an `AIE_PARTITION` section body.
pub fn aie_partition(p: &AiePartition) -> Vec<u8> {
    let mut b = Body(vec![0u8; 184]);
    b.set(0, &[p.schema_version]);
    let name = b.string(&p.name);
    b.set(4, &name.to_le_bytes());
    b.set(8, &p.operations_per_cycle.to_le_bytes());
    b.set(16, &p.inference_fingerprint.to_le_bytes());
    b.set(24, &p.pre_post_fingerprint.to_le_bytes());
    b.set(32, &p.column_width.to_le_bytes());
    let cols: Vec<u8> = p
        .start_columns
        .iter()
        .flat_map(|c| c.to_le_bytes())
        .collect();
    let cols_at = b.append(&cols);
    b.set_array(40, p.start_columns.len(), cols_at);
    if !p.kernel_commit_id.is_empty() {
        let id = b.string(&p.kernel_commit_id);
        b.set(128, &id.to_le_bytes());
    }
    let pdis_at = b.append(&vec![0u8; p.pdis.len() * 96]);
    b.set_array(120, p.pdis.len(), pdis_at);
    for (i, pdi) in p.pdis.iter().enumerate() {
        let entry = pdis_at as usize + i * 96;
        b.set(entry, &pdi.uuid);
        let img = b.append(&pdi.image);
        b.set_array(entry + 16, pdi.image.len(), img);
        let groups_at = b.append(&vec![0u8; pdi.cdo_groups.len() * 96]);
        b.set_array(entry + 24, pdi.cdo_groups.len(), groups_at);
        for (j, g) in pdi.cdo_groups.iter().enumerate() {
            let ge = groups_at as usize + j * 96;
            let name = b.string(&g.name);
            b.set(ge, &name.to_le_bytes());
            b.set(ge + 4, &[g.cdo_type]);
            b.set(ge + 8, &g.pdi_id.to_le_bytes());
            let ids: Vec<u8> = g
                .dpu_kernel_ids
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            let ids_at = b.append(&ids);
            b.set_array(ge + 16, g.dpu_kernel_ids.len(), ids_at);
            let pre: Vec<u8> = g
                .pre_cdo_groups
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            let pre_at = b.append(&pre);
            b.set_array(ge + 24, g.pre_cdo_groups.len(), pre_at);
        }
    }
    b.0
}

/// Encodes an `IP_LAYOUT` section body.
pub fn ip_layout(ips: &[IpData]) -> Vec<u8> {
    let mut out = vec![0u8; 8 + ips.len() * 80];
    put(&mut out, 0, &u32_of(ips.len()).to_le_bytes());
    for (i, ip) in ips.iter().enumerate() {
        let at = 8 + i * 80;
        put(&mut out, at, &ip.ip_type.to_le_bytes());
        put(&mut out, at + 4, &ip.properties.to_le_bytes());
        put(&mut out, at + 8, &ip.base_address.to_le_bytes());
        let n = ip.name.as_bytes();
        put(&mut out, at + 16, &n[..n.len().min(63)]);
    }
    out
}

/// Encodes a `MEM_TOPOLOGY` section body.
pub fn mem_topology(mems: &[MemData]) -> Vec<u8> {
    let mut out = vec![0u8; 8 + mems.len() * 40];
    put(&mut out, 0, &u32_of(mems.len()).to_le_bytes());
    for (i, m) in mems.iter().enumerate() {
        let at = 8 + i * 40;
        out[at] = m.mem_type;
        out[at + 1] = u8::from(m.used);
        put(&mut out, at + 8, &m.size_kb.to_le_bytes());
        put(&mut out, at + 16, &m.base_address.to_le_bytes());
        let t = m.tag.as_bytes();
        put(&mut out, at + 24, &t[..t.len().min(15)]);
    }
    out
}

/// `ps_kernel` properties word for a DPU kernel (`subtype`, `functional`, `kernel_id`).
pub const fn ps_kernel_properties(subtype: u8, functional: u8, kernel_id: u16) -> u32 {
    (subtype as u32 & 3) | ((functional as u32 & 3) << 4) | ((kernel_id as u32 & 0xfff) << 16)
}

/// A complete single-PDI NPU xclbin the way aiecc lays one out: AIE_PARTITION with one
/// PRIMARY PDI, an IP_LAYOUT with the `MLIR_AIE` DPU kernel, and a MEM_TOPOLOGY.
pub fn npu_xclbin(uuid: [u8; 16], pdi: &[u8], column_width: u16, ops_per_cycle: u32) -> Vec<u8> {
    use crate::xclbin::{kind, AiePdi, CdoGroup, CT_PRIMARY, IP_PS_KERNEL, MEM_HOST, ST_DPU};
    let partition = AiePartition {
        schema_version: 0,
        name: "onebit".into(),
        operations_per_cycle: ops_per_cycle,
        inference_fingerprint: 0,
        pre_post_fingerprint: 0,
        column_width,
        start_columns: vec![0],
        pdis: vec![AiePdi {
            uuid,
            image: pdi.to_vec(),
            cdo_groups: vec![CdoGroup {
                name: "DPU".into(),
                cdo_type: CT_PRIMARY,
                pdi_id: 1,
                dpu_kernel_ids: vec![0x901],
                pre_cdo_groups: vec![],
            }],
        }],
        kernel_commit_id: String::new(),
    };
    let ip = IpData {
        ip_type: IP_PS_KERNEL,
        properties: ps_kernel_properties(ST_DPU, 0, 0x901),
        base_address: 0,
        name: "MLIR_AIE:MLIRAIE".into(),
    };
    let mem = MemData {
        mem_type: MEM_HOST,
        used: true,
        size_kb: 64 << 10,
        base_address: 0x400_0000,
        tag: "HOST".into(),
    };
    XclbinBuilder::new(uuid)
        .section(kind::MEM_TOPOLOGY, "", mem_topology(&[mem]))
        .section(kind::IP_LAYOUT, "", ip_layout(&[ip]))
        .section(kind::AIE_PARTITION, "", aie_partition(&partition))
        .build()
}
