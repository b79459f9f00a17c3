//! The xclbin ("axlf") container, read just far enough to drive the NPU: the section table,
//! `AIE_PARTITION` (column width, ops per cycle, the PDI images and their CDO groups),
//! `IP_LAYOUT` (the CU's `functional` value) and `MEM_TOPOLOGY`.
//!
//! Layout from Xilinx/XRT `xrt/detail/xclbin.h` (amd-uapi.md §5.6). Every offset and length
//! read from the file is bounds-checked; a malformed file is an [`XclbinError`] that names
//! the field and the byte offset, never a panic.

use std::fmt;

/// `"xclbin2\0"`.
pub const AXLF_MAGIC: &[u8; 8] = b"xclbin2\0";
/// File offset of `axlf.m_header`.
pub const AXLF_HEADER_OFFSET: usize = 304;
/// Size of `axlf_header`.
pub const AXLF_HEADER_SIZE: usize = 152;
/// File offset of the first `axlf_section_header`.
pub const AXLF_SECTIONS_OFFSET: usize = AXLF_HEADER_OFFSET + AXLF_HEADER_SIZE;
/// Size of one `axlf_section_header`.
pub const AXLF_SECTION_HEADER_SIZE: usize = 40;
/// `XCLBIN_MAX_NUM_SECTION`.
pub const XCLBIN_MAX_NUM_SECTION: u32 = 0x10000;

/// `axlf_section_kind` values onebit reads.
pub mod kind {
    pub const EMBEDDED_METADATA: u32 = 2;
    pub const MEM_TOPOLOGY: u32 = 6;
    pub const CONNECTIVITY: u32 = 7;
    pub const IP_LAYOUT: u32 = 8;
    pub const PDI: u32 = 18;
    pub const AIE_METADATA: u32 = 25;
    pub const GROUP_TOPOLOGY: u32 = 26;
    pub const AIE_PARTITION: u32 = 32;
}

/// `IP_TYPE::IP_PS_KERNEL`, the type aiecc gives the NPU kernel.
pub const IP_PS_KERNEL: u32 = 7;
/// `IP_TYPE::IP_KERNEL`.
pub const IP_KERNEL: u32 = 1;
/// `PS_SUBTYPE::ST_DPU`.
pub const ST_DPU: u8 = 1;
/// `CDO_Type::CT_PRIMARY`.
pub const CT_PRIMARY: u8 = 1;
/// `MEM_TYPE::MEM_HOST`.
pub const MEM_HOST: u8 = 10;

const AIE_PARTITION_SIZE: usize = 184;
const AIE_PDI_SIZE: usize = 96;
const CDO_GROUP_SIZE: usize = 96;
const IP_DATA_SIZE: usize = 80;
const MEM_DATA_SIZE: usize = 40;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XclbinError {
    #[error("not an xclbin: the file starts with {found:02x?}, not \"xclbin2\\0\" (pass the final.xclbin that aiecc/IRON wrote)")]
    BadMagic { found: Vec<u8> },
    #[error("xclbin truncated: {what} needs bytes {start}..{end} but the {within} is {len} bytes")]
    OutOfBounds {
        what: String,
        start: u64,
        end: u64,
        within: &'static str,
        len: usize,
    },
    #[error(
        "xclbin header says the file is {declared} bytes but {actual} were read (truncated copy?)"
    )]
    LengthMismatch { declared: u64, actual: usize },
    #[error("xclbin declares {0} sections, more than XCLBIN_MAX_NUM_SECTION (corrupt header)")]
    TooManySections(u32),
    #[error("xclbin has no {name} section (kind {kind}); an NPU xclbin from aiecc has one")]
    MissingSection { kind: u32, name: &'static str },
    #[error("xclbin {section}: {problem}")]
    Invalid {
        section: &'static str,
        problem: String,
    },
}

/// Bounds-checked little-endian reads within one named region.
#[derive(Clone, Copy)]
struct Reader<'a> {
    data: &'a [u8],
    within: &'static str,
}

impl<'a> Reader<'a> {
    fn bytes(&self, what: &str, start: u64, len: u64) -> Result<&'a [u8], XclbinError> {
        let end = start.checked_add(len);
        match end {
            Some(end) if end <= self.data.len() as u64 => {
                Ok(&self.data[start as usize..end as usize])
            }
            _ => Err(XclbinError::OutOfBounds {
                what: what.to_string(),
                start,
                end: end.unwrap_or(u64::MAX),
                within: self.within,
                len: self.data.len(),
            }),
        }
    }
    fn u8(&self, what: &str, off: u64) -> Result<u8, XclbinError> {
        Ok(self.bytes(what, off, 1)?[0])
    }
    fn u16(&self, what: &str, off: u64) -> Result<u16, XclbinError> {
        Ok(u16::from_le_bytes(
            self.bytes(what, off, 2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&self, what: &str, off: u64) -> Result<u32, XclbinError> {
        Ok(u32::from_le_bytes(
            self.bytes(what, off, 4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&self, what: &str, off: u64) -> Result<u64, XclbinError> {
        Ok(u64::from_le_bytes(
            self.bytes(what, off, 8)?.try_into().expect("8 bytes"),
        ))
    }
    /// A NUL-terminated string starting at `off` (an `mpo_*` offset).
    fn cstr(&self, what: &str, off: u64) -> Result<String, XclbinError> {
        self.bytes(what, off, 0)?;
        let tail = &self.data[off as usize..];
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| XclbinError::Invalid {
                section: self.within,
                problem: format!("{what} at offset {off} has no terminating NUL"),
            })?;
        Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
    }
    /// An `array_offset {u32 size, u32 offset}` at `off`, returned as the element bytes.
    fn array(&self, what: &str, off: u64, elem: u64) -> Result<(u32, &'a [u8]), XclbinError> {
        let count = self.u32(what, off)?;
        let start = self.u32(what, off + 4)?;
        let data = self.bytes(what, u64::from(start), u64::from(count) * elem)?;
        Ok((count, data))
    }
}

/// A fixed-size char field up to its first NUL.
fn fixed_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// One entry of the section table, with its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Section {
    pub kind: u32,
    pub name: String,
    pub data: Vec<u8>,
}

impl fmt::Debug for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Section(kind {}, {:?}, {} bytes)",
            self.kind,
            self.name,
            self.data.len()
        )
    }
}

/// A parsed xclbin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xclbin {
    /// `m_header.uuid`: the id XRT-style tooling keys hardware contexts by.
    pub uuid: [u8; 16],
    /// `(major, minor, patch)` of the tool that wrote it.
    pub version: (u8, u8, u16),
    pub sections: Vec<Section>,
}

impl Xclbin {
    /// Parses and bounds-checks the container and its section table.
    pub fn parse(bytes: &[u8]) -> Result<Xclbin, XclbinError> {
        let file = Reader {
            data: bytes,
            within: "file",
        };
        let magic = file
            .bytes("magic", 0, 8)
            .map_err(|_| XclbinError::BadMagic {
                found: bytes[..bytes.len().min(8)].to_vec(),
            })?;
        if magic != AXLF_MAGIC {
            return Err(XclbinError::BadMagic {
                found: magic.to_vec(),
            });
        }
        let h = AXLF_HEADER_OFFSET as u64;
        file.bytes("axlf_header", h, AXLF_HEADER_SIZE as u64)?;
        let declared = file.u64("m_length", h)?;
        if declared > bytes.len() as u64 || declared < AXLF_SECTIONS_OFFSET as u64 {
            return Err(XclbinError::LengthMismatch {
                declared,
                actual: bytes.len(),
            });
        }
        let file = Reader {
            data: &bytes[..declared as usize],
            within: "file",
        };
        let version = (
            file.u8("m_versionMajor", h + 26)?,
            file.u8("m_versionMinor", h + 27)?,
            file.u16("m_versionPatch", h + 24)?,
        );
        let uuid: [u8; 16] = file
            .bytes("uuid", h + 112, 16)?
            .try_into()
            .expect("16 bytes");
        let count = file.u32("m_numSections", h + 144)?;
        if count > XCLBIN_MAX_NUM_SECTION {
            return Err(XclbinError::TooManySections(count));
        }
        let mut sections = Vec::with_capacity(count as usize);
        for i in 0..u64::from(count) {
            let at = AXLF_SECTIONS_OFFSET as u64 + i * AXLF_SECTION_HEADER_SIZE as u64;
            let what = format!("section header {i}");
            let hdr = file.bytes(&what, at, AXLF_SECTION_HEADER_SIZE as u64)?;
            let kind = u32::from_le_bytes(hdr[0..4].try_into().expect("4 bytes"));
            let name = fixed_str(&hdr[4..20]);
            let offset = u64::from_le_bytes(hdr[24..32].try_into().expect("8 bytes"));
            let size = u64::from_le_bytes(hdr[32..40].try_into().expect("8 bytes"));
            let data = file.bytes(
                &format!("section {i} ({name:?}, kind {kind})"),
                offset,
                size,
            )?;
            sections.push(Section {
                kind,
                name,
                data: data.to_vec(),
            });
        }
        Ok(Xclbin {
            uuid,
            version,
            sections,
        })
    }

    /// The first section of `kind`.
    pub fn section(&self, kind: u32) -> Option<&Section> {
        self.sections.iter().find(|s| s.kind == kind)
    }

    fn require(&self, kind: u32, name: &'static str) -> Result<&Section, XclbinError> {
        self.section(kind)
            .ok_or(XclbinError::MissingSection { kind, name })
    }

    /// The `AIE_PARTITION` section, decoded.
    pub fn aie_partition(&self) -> Result<AiePartition, XclbinError> {
        AiePartition::parse(&self.require(kind::AIE_PARTITION, "AIE_PARTITION")?.data)
    }

    /// The `IP_LAYOUT` section, decoded.
    pub fn ip_layout(&self) -> Result<Vec<IpData>, XclbinError> {
        IpData::parse_layout(&self.require(kind::IP_LAYOUT, "IP_LAYOUT")?.data)
    }

    /// The `MEM_TOPOLOGY` section, decoded.
    pub fn mem_topology(&self) -> Result<Vec<MemData>, XclbinError> {
        MemData::parse_topology(&self.require(kind::MEM_TOPOLOGY, "MEM_TOPOLOGY")?.data)
    }
}

/// `cdo_group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CdoGroup {
    pub name: String,
    pub cdo_type: u8,
    pub pdi_id: u64,
    pub dpu_kernel_ids: Vec<u64>,
    pub pre_cdo_groups: Vec<u32>,
}

/// `aie_pdi`: one partition image and the CDO groups in it.
#[derive(Clone, PartialEq, Eq)]
pub struct AiePdi {
    pub uuid: [u8; 16],
    pub image: Vec<u8>,
    pub cdo_groups: Vec<CdoGroup>,
}

impl fmt::Debug for AiePdi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AiePdi")
            .field("uuid", &self.uuid)
            .field("image_bytes", &self.image.len())
            .field("cdo_groups", &self.cdo_groups)
            .finish()
    }
}

impl AiePdi {
    /// Whether one of its CDO groups is the PRIMARY one (the image a context loads).
    pub fn is_primary(&self) -> bool {
        self.cdo_groups.iter().any(|g| g.cdo_type == CT_PRIMARY)
    }
}

/// `aie_partition`: what a hardware context needs (columns, ops/cycle, PDIs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AiePartition {
    pub schema_version: u8,
    pub name: String,
    pub operations_per_cycle: u32,
    pub inference_fingerprint: u64,
    pub pre_post_fingerprint: u64,
    pub column_width: u16,
    pub start_columns: Vec<u16>,
    pub pdis: Vec<AiePdi>,
    pub kernel_commit_id: String,
}

impl AiePartition {
    /// Decodes an `AIE_PARTITION` section body.
    pub fn parse(data: &[u8]) -> Result<AiePartition, XclbinError> {
        let r = Reader {
            data,
            within: "AIE_PARTITION section",
        };
        r.bytes("aie_partition header", 0, AIE_PARTITION_SIZE as u64)?;
        let column_width = r.u16("info.column_width", 32)?;
        if column_width == 0 {
            return Err(XclbinError::Invalid {
                section: "AIE_PARTITION",
                problem: "column_width is 0; a partition spans at least one column".into(),
            });
        }
        let (_, cols) = r.array("info.start_columns", 32 + 8, 2)?;
        let start_columns = cols
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let (npdi, pdi_bytes) = r.array("aie_pdi", 120, AIE_PDI_SIZE as u64)?;
        let mut pdis = Vec::with_capacity(npdi as usize);
        for (i, p) in pdi_bytes.chunks_exact(AIE_PDI_SIZE).enumerate() {
            let pr = Reader {
                data: p,
                within: "aie_pdi entry",
            };
            let uuid: [u8; 16] = p[..16].try_into().expect("16 bytes");
            let img_count = pr.u32("pdi_image.size", 16)?;
            let img_off = pr.u32("pdi_image.offset", 20)?;
            let image = r
                .bytes(
                    &format!("aie_pdi[{i}].pdi_image"),
                    u64::from(img_off),
                    u64::from(img_count),
                )?
                .to_vec();
            if image.is_empty() {
                return Err(XclbinError::Invalid {
                    section: "AIE_PARTITION",
                    problem: format!("aie_pdi[{i}] has an empty PDI image"),
                });
            }
            let grp_count = pr.u32("cdo_groups.size", 24)?;
            let grp_off = pr.u32("cdo_groups.offset", 28)?;
            let grp_bytes = r.bytes(
                &format!("aie_pdi[{i}].cdo_groups"),
                u64::from(grp_off),
                u64::from(grp_count) * CDO_GROUP_SIZE as u64,
            )?;
            let mut cdo_groups = Vec::with_capacity(grp_count as usize);
            for g in grp_bytes.chunks_exact(CDO_GROUP_SIZE) {
                let gr = Reader {
                    data: g,
                    within: "cdo_group entry",
                };
                let name = r.cstr("cdo_group.mpo_name", u64::from(gr.u32("mpo_name", 0)?))?;
                let (nk, ids) = (
                    gr.u32("dpu_kernel_ids.size", 16)?,
                    gr.u32("dpu_kernel_ids.offset", 20)?,
                );
                let ids = r.bytes(
                    "cdo_group.dpu_kernel_ids",
                    u64::from(ids),
                    u64::from(nk) * 8,
                )?;
                let (np, pre) = (
                    gr.u32("pre_cdo_groups.size", 24)?,
                    gr.u32("pre_cdo_groups.offset", 28)?,
                );
                let pre = r.bytes(
                    "cdo_group.pre_cdo_groups",
                    u64::from(pre),
                    u64::from(np) * 4,
                )?;
                cdo_groups.push(CdoGroup {
                    name,
                    cdo_type: gr.u8("cdo_type", 4)?,
                    pdi_id: gr.u64("pdi_id", 8)?,
                    dpu_kernel_ids: ids
                        .chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().expect("8")))
                        .collect(),
                    pre_cdo_groups: pre
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes(c.try_into().expect("4")))
                        .collect(),
                });
            }
            pdis.push(AiePdi {
                uuid,
                image,
                cdo_groups,
            });
        }
        if pdis.is_empty() {
            return Err(XclbinError::Invalid {
                section: "AIE_PARTITION",
                problem: "no PDI images (aie_pdi.size is 0)".into(),
            });
        }
        Ok(AiePartition {
            schema_version: r.u8("schema_version", 0)?,
            name: r.cstr("mpo_name", u64::from(r.u32("mpo_name", 4)?))?,
            operations_per_cycle: r.u32("operations_per_cycle", 8)?,
            inference_fingerprint: r.u64("inference_fingerprint", 16)?,
            pre_post_fingerprint: r.u64("pre_post_fingerprint", 24)?,
            column_width,
            start_columns,
            pdis,
            kernel_commit_id: match r.u32("kernel_commit_id", 128)? {
                0 => String::new(),
                off => r.cstr("kernel_commit_id", u64::from(off))?,
            },
        })
    }

    /// The PDI a context loads: the one with a PRIMARY CDO group, else the only one.
    pub fn primary_pdi(&self) -> Result<&AiePdi, XclbinError> {
        let mut primary = self.pdis.iter().filter(|p| p.is_primary());
        match (primary.next(), primary.next()) {
            (Some(p), None) => Ok(p),
            (Some(_), Some(_)) => Err(XclbinError::Invalid {
                section: "AIE_PARTITION",
                problem: "more than one PDI has a PRIMARY CDO group; name the one to load in the artifact manifest".into(),
            }),
            (None, _) if self.pdis.len() == 1 => Ok(&self.pdis[0]),
            (None, _) => Err(XclbinError::Invalid {
                section: "AIE_PARTITION",
                problem: format!("{} PDIs and none has a PRIMARY CDO group", self.pdis.len()),
            }),
        }
    }
}

/// `ip_data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpData {
    pub ip_type: u32,
    pub properties: u32,
    pub base_address: u64,
    pub name: String,
}

impl IpData {
    fn parse_layout(data: &[u8]) -> Result<Vec<IpData>, XclbinError> {
        let r = Reader {
            data,
            within: "IP_LAYOUT section",
        };
        let count = r.u32("m_count", 0)?;
        // m_ip_data is 8-byte aligned after the i32 count.
        let all = r.bytes("m_ip_data", 8, u64::from(count) * IP_DATA_SIZE as u64)?;
        Ok(all
            .chunks_exact(IP_DATA_SIZE)
            .map(|d| IpData {
                ip_type: u32::from_le_bytes(d[0..4].try_into().expect("4")),
                properties: u32::from_le_bytes(d[4..8].try_into().expect("4")),
                base_address: u64::from_le_bytes(d[8..16].try_into().expect("8")),
                name: fixed_str(&d[16..80]),
            })
            .collect())
    }

    /// `ps_kernel.m_subtype` (bits 1:0).
    pub fn subtype(&self) -> u8 {
        (self.properties & 0x3) as u8
    }

    /// `ps_kernel.m_functional` (bits 5:4): the `cu_func` CONFIG_CU wants.
    pub fn functional(&self) -> u8 {
        ((self.properties >> 4) & 0x3) as u8
    }

    /// `ps_kernel.m_kernel_id` (bits 27:16).
    pub fn kernel_id(&self) -> u16 {
        ((self.properties >> 16) & 0xfff) as u16
    }
}

/// `mem_data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemData {
    pub mem_type: u8,
    pub used: bool,
    pub size_kb: u64,
    pub base_address: u64,
    pub tag: String,
}

impl MemData {
    fn parse_topology(data: &[u8]) -> Result<Vec<MemData>, XclbinError> {
        let r = Reader {
            data,
            within: "MEM_TOPOLOGY section",
        };
        let count = r.u32("m_count", 0)?;
        let all = r.bytes("m_mem_data", 8, u64::from(count) * MEM_DATA_SIZE as u64)?;
        Ok(all
            .chunks_exact(MEM_DATA_SIZE)
            .map(|d| MemData {
                mem_type: d[0],
                used: d[1] != 0,
                size_kb: u64::from_le_bytes(d[8..16].try_into().expect("8")),
                base_address: u64::from_le_bytes(d[16..24].try_into().expect("8")),
                tag: fixed_str(&d[24..40]),
            })
            .collect())
    }
}

#[cfg(all(test, feature = "emulator"))]
mod tests {
    use super::*;
    use crate::xclbin_build::{npu_xclbin, XclbinBuilder};

    fn sample() -> Vec<u8> {
        npu_xclbin([7; 16], &[0xaa; 100], 4, 2048)
    }

    #[test]
    fn round_trip() {
        let x = Xclbin::parse(&sample()).unwrap();
        assert_eq!(x.uuid, [7; 16]);
        assert_eq!(x.version, (2, 1, 0));
        assert_eq!(x.sections.len(), 3);
        let p = x.aie_partition().unwrap();
        assert_eq!(p.column_width, 4);
        assert_eq!(p.operations_per_cycle, 2048);
        assert_eq!(p.start_columns, vec![0]);
        assert_eq!(p.name, "onebit");
        let pdi = p.primary_pdi().unwrap();
        assert_eq!(pdi.image, vec![0xaa; 100]);
        assert_eq!(pdi.cdo_groups[0].name, "DPU");
        assert_eq!(pdi.cdo_groups[0].dpu_kernel_ids, vec![0x901]);
        let ip = &x.ip_layout().unwrap()[0];
        assert_eq!(ip.ip_type, IP_PS_KERNEL);
        assert_eq!(
            (ip.subtype(), ip.functional(), ip.kernel_id()),
            (ST_DPU, 0, 0x901)
        );
        assert_eq!(ip.name, "MLIR_AIE:MLIRAIE");
        let mem = &x.mem_topology().unwrap()[0];
        assert_eq!(
            (mem.mem_type, mem.used, mem.base_address),
            (MEM_HOST, true, 0x400_0000)
        );
    }

    #[test]
    fn header_fields_sit_where_xclbin_h_puts_them() {
        let b = sample();
        assert_eq!(&b[0..8], AXLF_MAGIC);
        assert_eq!(
            u64::from_le_bytes(b[304..312].try_into().unwrap()),
            b.len() as u64
        );
        assert_eq!(u32::from_le_bytes(b[448..452].try_into().unwrap()), 3);
        // first section header: MEM_TOPOLOGY at an 8-aligned offset after the table
        assert_eq!(
            u32::from_le_bytes(b[456..460].try_into().unwrap()),
            kind::MEM_TOPOLOGY
        );
        let off = u64::from_le_bytes(b[480..488].try_into().unwrap());
        assert_eq!(off % 8, 0);
        assert!(off >= 456 + 3 * 40);
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            Xclbin::parse(b"xclbin1\0rest"),
            Err(XclbinError::BadMagic { .. })
        ));
        assert!(matches!(
            Xclbin::parse(b"xcl"),
            Err(XclbinError::BadMagic { .. })
        ));
        let good = sample();
        assert!(matches!(
            Xclbin::parse(&good[..400]),
            Err(XclbinError::OutOfBounds { .. })
        ));
        assert!(matches!(
            Xclbin::parse(&good[..good.len() - 8]),
            Err(XclbinError::LengthMismatch { .. })
        ));

        let mut many = good.clone();
        many[448..452].copy_from_slice(&0x20000u32.to_le_bytes());
        assert_eq!(
            Xclbin::parse(&many),
            Err(XclbinError::TooManySections(0x20000))
        );

        let mut past_end = good.clone();
        past_end[488..496].copy_from_slice(&u64::MAX.to_le_bytes()); // section 0 size
        let e = Xclbin::parse(&past_end).unwrap_err();
        assert!(e.to_string().contains("section 0"), "{e}");

        let empty = XclbinBuilder::new([0; 16]).build();
        let x = Xclbin::parse(&empty).unwrap();
        assert_eq!(
            x.aie_partition(),
            Err(XclbinError::MissingSection {
                kind: kind::AIE_PARTITION,
                name: "AIE_PARTITION"
            })
        );
    }

    #[test]
    fn rejects_bad_partition() {
        let x = Xclbin::parse(&sample()).unwrap();
        let mut body = x.section(kind::AIE_PARTITION).unwrap().data.clone();
        assert!(AiePartition::parse(&body[..100]).is_err());
        let mut zero_width = body.clone();
        zero_width[32..34].copy_from_slice(&0u16.to_le_bytes());
        assert!(AiePartition::parse(&zero_width)
            .unwrap_err()
            .to_string()
            .contains("column_width"));
        // PDI array pointing past the section
        body[124..128].copy_from_slice(&0xffff_0000u32.to_le_bytes());
        let e = AiePartition::parse(&body).unwrap_err();
        assert!(matches!(e, XclbinError::OutOfBounds { .. }), "{e}");
    }

    #[test]
    fn never_panics_on_garbage() {
        let good = sample();
        let mut state = 0x1234_5678u32;
        let (mut parsed, mut rejected) = (0, 0);
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..4 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let i = state as usize % b.len();
                b[i] = (state >> 24) as u8;
            }
            match Xclbin::parse(&b) {
                Ok(x) => {
                    parsed += 1;
                    let _ = x.aie_partition().map(|p| p.primary_pdi().map(|_| ()));
                    let _ = x.ip_layout();
                    let _ = x.mem_topology();
                }
                Err(e) => {
                    rejected += 1;
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        assert!(
            parsed > 0 && rejected > 0,
            "mutations should hit both paths: {parsed}/{rejected}"
        );
    }
}
