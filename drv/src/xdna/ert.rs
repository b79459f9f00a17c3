//! ERT command packets for the CMD BO, built by pure functions (amd-uapi.md §5.5).
//!
//! A packet is `u32 header` + `count` payload words. START_NPU's payload is the CU mask,
//! then `{u64 instruction_buffer, u32 size, u32 prop_count}`, the property words and the
//! kernel's argument words. CMD_CHAIN's payload is `{count, submit_index, error_index,
//! reserved[3]}` and the u64 handles of other CMD BOs.

use crate::sys::amdxdna::*;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ErtError {
    #[error("START_NPU carries {words} property+argument words; the driver accepts at most {MAX_NPU_ARGS_WORDS} (MAX_NPU_ARGS_SIZE): pass fewer buffers or pack scalars")]
    TooManyArgs { words: usize },
    #[error("CU index {0} is out of range: a context has at most {MAX_CUS} CUs")]
    BadCuIndex(u32),
    #[error("instruction buffer is empty or not a whole number of 32-bit words ({0} bytes)")]
    BadInstructionSize(u64),
    #[error("a command chain needs 1..={max} commands, got {got}")]
    BadChainLength { got: usize, max: usize },
    #[error("a chain of {commands} commands needs {bytes} bytes of firmware slots, but the driver packs a whole chain into one {CHAIN_BUF_BYTES}-byte buffer: split it into several chains")]
    ChainTooLarge { commands: usize, bytes: usize },
    #[error(
        "command BO word 0 is not a START_NPU header with its fixed fields (header {0:#010x})"
    )]
    NotStartNpu(u32),
    #[error("packet of {words} words does not fit a {bo_size}-byte command BO")]
    TooLarge { words: usize, bo_size: u64 },
}

/// Header word: state NEW, `count` payload words, `opcode`, type ERT_CU.
pub const fn header(opcode: u32, count: u32, extra_cu_masks: u32) -> u32 {
    (ERT_CMD_STATE_NEW << AMDXDNA_CMD_STATE_SHIFT)
        | ((extra_cu_masks & AMDXDNA_CMD_EXTRA_CU_MASK_MASK) << AMDXDNA_CMD_EXTRA_CU_MASK_SHIFT)
        | ((count & AMDXDNA_CMD_COUNT_MASK) << AMDXDNA_CMD_COUNT_SHIFT)
        | ((opcode & AMDXDNA_CMD_OPCODE_MASK) << AMDXDNA_CMD_OPCODE_SHIFT)
        | (ERT_CU << AMDXDNA_CMD_TYPE_SHIFT)
}

/// The fields of a header word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub state: u32,
    pub extra_cu_masks: u32,
    pub count: u32,
    pub opcode: u32,
}

impl Header {
    pub const fn decode(word: u32) -> Header {
        Header {
            state: (word >> AMDXDNA_CMD_STATE_SHIFT) & AMDXDNA_CMD_STATE_MASK,
            extra_cu_masks: (word >> AMDXDNA_CMD_EXTRA_CU_MASK_SHIFT)
                & AMDXDNA_CMD_EXTRA_CU_MASK_MASK,
            count: (word >> AMDXDNA_CMD_COUNT_SHIFT) & AMDXDNA_CMD_COUNT_MASK,
            opcode: (word >> AMDXDNA_CMD_OPCODE_SHIFT) & AMDXDNA_CMD_OPCODE_MASK,
        }
    }
}

/// The final state the driver writes back into the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdState {
    New,
    Queued,
    Running,
    Completed,
    Error,
    Abort,
    Submitted,
    Timeout,
    NoResponse,
    Unknown(u32),
}

impl CmdState {
    pub const fn from_header(word: u32) -> CmdState {
        match word & AMDXDNA_CMD_STATE_MASK {
            ERT_CMD_STATE_NEW => CmdState::New,
            ERT_CMD_STATE_QUEUED => CmdState::Queued,
            ERT_CMD_STATE_RUNNING => CmdState::Running,
            ERT_CMD_STATE_COMPLETED => CmdState::Completed,
            ERT_CMD_STATE_ERROR => CmdState::Error,
            ERT_CMD_STATE_ABORT => CmdState::Abort,
            ERT_CMD_STATE_SUBMITTED => CmdState::Submitted,
            ERT_CMD_STATE_TIMEOUT => CmdState::Timeout,
            ERT_CMD_STATE_NORESPONSE => CmdState::NoResponse,
            s => CmdState::Unknown(s),
        }
    }
}

/// Kernel argument words in register-map order; u64 values go low word first (XRT's
/// `add_arg_64`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArgWords(pub Vec<u32>);

impl ArgWords {
    pub fn new() -> Self {
        ArgWords(Vec::new())
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.push(v);
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.push(v as u32);
        self.0.push((v >> 32) as u32);
        self
    }
}

/// An `ERT_START_NPU` packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartNpu {
    pub cu_index: u32,
    pub instruction_buffer: u64,
    pub instruction_size: u32,
    pub props: Vec<u32>,
    pub args: Vec<u32>,
}

impl StartNpu {
    /// `instruction_buffer` is the NPU address (GET_BO_INFO `xdna_addr`) of the DEV BO that
    /// holds the instruction stream, `instruction_size` its length in bytes.
    pub fn new(cu_index: u32, instruction_buffer: u64, instruction_size: u32) -> Self {
        StartNpu {
            cu_index,
            instruction_buffer,
            instruction_size,
            props: Vec::new(),
            args: Vec::new(),
        }
    }

    pub fn args(mut self, args: ArgWords) -> Self {
        self.args = args.0;
        self
    }

    pub fn props(mut self, props: Vec<u32>) -> Self {
        self.props = props;
        self
    }

    /// The packet's words, header first.
    pub fn build(&self) -> Result<Vec<u32>, ErtError> {
        if self.cu_index >= MAX_CUS as u32 {
            return Err(ErtError::BadCuIndex(self.cu_index));
        }
        if self.instruction_size == 0 || !self.instruction_size.is_multiple_of(4) {
            return Err(ErtError::BadInstructionSize(u64::from(
                self.instruction_size,
            )));
        }
        let extra = self.props.len() + self.args.len();
        if extra > MAX_NPU_ARGS_WORDS {
            return Err(ErtError::TooManyArgs { words: extra });
        }
        let count = 1 + 4 + extra;
        let mut w = Vec::with_capacity(1 + count);
        w.push(header(ERT_START_NPU, count as u32, 0));
        w.push(1u32 << self.cu_index);
        w.push(self.instruction_buffer as u32);
        w.push((self.instruction_buffer >> 32) as u32);
        w.push(self.instruction_size);
        w.push(self.props.len() as u32);
        w.extend_from_slice(&self.props);
        w.extend_from_slice(&self.args);
        Ok(w)
    }
}

/// Most commands one chain packet can name: its count field is 11 bits, six of them taken
/// by the chain header, two words per handle. The byte bound below is usually tighter.
pub const MAX_CHAIN_COMMANDS: usize = (AMDXDNA_CMD_COUNT_MASK as usize - 6) / 2;

/// `MAX_CHAIN_CMDBUF_SIZE` (aie2_msg_priv.h): the driver copies every command of a chain
/// into one buffer of this size for the firmware (`aie2_cmdlist_multi_execbuf`), and a
/// chain whose slots do not fit fails with ENOSPC.
pub const CHAIN_BUF_BYTES: usize = 4096;

/// Bytes of the slot header the driver writes before each command's property and argument
/// words: `struct cmd_chain_slot_npu` (packed, 52 bytes) on current kernels. 6.14 writes the
/// 24-byte `cmd_chain_slot_dpu`, so a chain bounded with the larger header fits both.
pub const CHAIN_SLOT_HEADER_BYTES: usize = 52;

/// Bytes one START_NPU command with `arg_words` property+argument words takes in the chain
/// buffer.
pub const fn chain_slot_bytes(arg_words: usize) -> usize {
    CHAIN_SLOT_HEADER_BYTES + 4 * arg_words
}

/// The property+argument words of a START_NPU packet (what the driver copies into a chain
/// slot): the payload minus the CU masks and the four instruction-buffer words.
pub fn start_npu_arg_words(packet: &[u32]) -> Result<usize, ErtError> {
    let head = *packet.first().ok_or(ErtError::NotStartNpu(0))?;
    let h = Header::decode(head);
    let fixed = 1 + h.extra_cu_masks as usize + 4;
    if h.opcode != ERT_START_NPU || (h.count as usize) < fixed {
        return Err(ErtError::NotStartNpu(head));
    }
    Ok(h.count as usize - fixed)
}

/// One command of a chain: its CMD BO's GEM handle and its property+argument word count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainMember {
    pub handle: u32,
    pub arg_words: usize,
}

/// An `ERT_CMD_CHAIN` packet over other CMD BOs (by GEM handle), run by one EXEC_CMD.
/// Bounded by what the driver's 4 KiB chain buffer holds, not only by the count field.
pub fn cmd_chain(members: &[ChainMember]) -> Result<Vec<u32>, ErtError> {
    if members.is_empty() || members.len() > MAX_CHAIN_COMMANDS {
        return Err(ErtError::BadChainLength {
            got: members.len(),
            max: MAX_CHAIN_COMMANDS,
        });
    }
    let bytes: usize = members.iter().map(|m| chain_slot_bytes(m.arg_words)).sum();
    if bytes > CHAIN_BUF_BYTES {
        return Err(ErtError::ChainTooLarge {
            commands: members.len(),
            bytes,
        });
    }
    let count = 6 + 2 * members.len();
    let mut w = Vec::with_capacity(1 + count);
    w.push(header(ERT_CMD_CHAIN, count as u32, 0));
    w.push(members.len() as u32);
    w.extend_from_slice(&[0, 0, 0, 0, 0]); // submit_index, error_index, reserved[3]
    for m in members {
        w.push(m.handle);
        w.push(0);
    }
    Ok(w)
}

/// Words as the little-endian bytes the CMD BO holds.
pub fn to_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Checks that a packet fits a command BO of `bo_size` bytes.
pub fn check_fits(words: &[u32], bo_size: u64) -> Result<(), ErtError> {
    if (words.len() as u64) * 4 > bo_size {
        return Err(ErtError::TooLarge {
            words: words.len(),
            bo_size,
        });
    }
    Ok(())
}

/// The argument block MLIR-AIE kernels expect (test/shim_test `elf_init_no_arg_cmd` and
/// aiecc's kernels.json register map): `u64 opcode = 3, u64 instr = 0, u32 ninstr = 0`, then
/// one u64 NPU address per buffer argument.
pub fn mlir_aie_args(buffer_addrs: &[u64]) -> ArgWords {
    let mut a = ArgWords::new().u64(3).u64(0).u32(0);
    for &addr in buffer_addrs {
        a = a.u64(addr);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_npu_bytes() {
        let pkt = StartNpu::new(0, 0x0400_8000, 0x120)
            .args(mlir_aie_args(&[0x7f00_1234_5000, 0x7f00_2000_0000]))
            .build()
            .unwrap();
        // count = cu_mask 1 + npu data 4 + args (2 + 2 + 1 + 2 + 2) = 14
        let expect_header: u32 = 1 | (14 << 12) | (20 << 23) | (3 << 28);
        assert_eq!(expect_header, 0x3a00_e001);
        let bytes = to_bytes(&pkt);
        #[rustfmt::skip]
        let golden: [u8; 60] = [
            0x01, 0xe0, 0x00, 0x3a, // header
            0x01, 0x00, 0x00, 0x00, // cu_mask: CU 0
            0x00, 0x80, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, // instruction buffer 0x4008000
            0x20, 0x01, 0x00, 0x00, // instruction size 0x120
            0x00, 0x00, 0x00, 0x00, // prop_count
            0x03, 0, 0, 0, 0, 0, 0, 0, // opcode = 3
            0, 0, 0, 0, 0, 0, 0, 0, // instr
            0, 0, 0, 0, // ninstr
            0x00, 0x50, 0x34, 0x12, 0x00, 0x7f, 0x00, 0x00, // bo0
            0x00, 0x00, 0x00, 0x20, 0x00, 0x7f, 0x00, 0x00, // bo1
        ];
        assert_eq!(bytes, golden);
        let h = Header::decode(pkt[0]);
        assert_eq!(
            h,
            Header {
                state: 1,
                extra_cu_masks: 0,
                count: 14,
                opcode: ERT_START_NPU
            }
        );
        assert_eq!(pkt.len(), 1 + h.count as usize);
    }

    #[test]
    fn start_npu_cu_mask_and_props() {
        let pkt = StartNpu::new(5, 0x1_0000_0000, 4)
            .props(vec![0xaa])
            .build()
            .unwrap();
        assert_eq!(
            pkt,
            vec![header(ERT_START_NPU, 6, 0), 1 << 5, 0, 1, 4, 1, 0xaa]
        );
    }

    #[test]
    fn start_npu_rejects() {
        assert_eq!(
            StartNpu::new(32, 0, 4).build(),
            Err(ErtError::BadCuIndex(32))
        );
        assert_eq!(
            StartNpu::new(0, 0, 0).build(),
            Err(ErtError::BadInstructionSize(0))
        );
        assert_eq!(
            StartNpu::new(0, 0, 6).build(),
            Err(ErtError::BadInstructionSize(6))
        );
        let many = ArgWords(vec![0; 27]);
        assert_eq!(
            StartNpu::new(0, 0, 4).args(many).build(),
            Err(ErtError::TooManyArgs { words: 27 })
        );
        let ok = ArgWords(vec![0; 26]);
        assert!(StartNpu::new(0, 0, 4).args(ok).build().is_ok());
    }

    fn member(handle: u32, arg_words: usize) -> ChainMember {
        ChainMember { handle, arg_words }
    }

    #[test]
    fn chain_bytes() {
        let pkt = cmd_chain(&[member(7, 3), member(9, 0)]).unwrap();
        #[rustfmt::skip]
        let golden: [u8; 44] = [
            0x01, 0xa0, 0x80, 0x39, // header: NEW, count 10, opcode 19, type 3
            2, 0, 0, 0, // command_count
            0, 0, 0, 0, 0, 0, 0, 0, // submit_index, error_index
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // reserved
            7, 0, 0, 0, 0, 0, 0, 0, // handle 7
            9, 0, 0, 0, 0, 0, 0, 0, // handle 9
        ];
        assert_eq!(to_bytes(&pkt), golden);
        assert!(cmd_chain(&[]).is_err());
    }

    #[test]
    fn chains_are_bounded_by_the_drivers_4k_buffer_not_the_count_field() {
        // 26 argument words: 52 + 104 = 156 bytes a slot, so 26 fit in 4096 and 27 do not.
        assert_eq!(chain_slot_bytes(MAX_NPU_ARGS_WORDS), 156);
        let full: Vec<_> = (0..26).map(|h| member(h, MAX_NPU_ARGS_WORDS)).collect();
        assert!(cmd_chain(&full).is_ok());
        let over: Vec<_> = (0..27).map(|h| member(h, MAX_NPU_ARGS_WORDS)).collect();
        assert_eq!(
            cmd_chain(&over),
            Err(ErtError::ChainTooLarge {
                commands: 27,
                bytes: 27 * 156
            })
        );
        // Argument-free commands: 4096 / 52 = 78 fit, far below the count field's 1020.
        let bare: Vec<_> = (0..78).map(|h| member(h, 0)).collect();
        assert!(cmd_chain(&bare).is_ok());
        let e = cmd_chain(&(0..79).map(|h| member(h, 0)).collect::<Vec<_>>()).unwrap_err();
        assert!(e.to_string().contains("4096-byte buffer"), "{e}");
        assert!(matches!(
            cmd_chain(&vec![member(1, 0); MAX_CHAIN_COMMANDS + 1]),
            Err(ErtError::BadChainLength { .. })
        ));
    }

    #[test]
    fn arg_words_of_a_start_npu_packet() {
        let pkt = StartNpu::new(0, 0x0400_8000, 0x120)
            .props(vec![1, 2])
            .args(mlir_aie_args(&[0x1000]))
            .build()
            .unwrap();
        assert_eq!(start_npu_arg_words(&pkt), Ok(2 + 7));
        let chain = cmd_chain(&[member(1, 0)]).unwrap();
        assert_eq!(
            start_npu_arg_words(&chain),
            Err(ErtError::NotStartNpu(chain[0]))
        );
        assert_eq!(start_npu_arg_words(&[]), Err(ErtError::NotStartNpu(0)));
    }

    #[test]
    fn states() {
        assert_eq!(
            CmdState::from_header(header(ERT_START_NPU, 5, 0)),
            CmdState::New
        );
        assert_eq!(CmdState::from_header(0x3a00_e004), CmdState::Completed);
        assert_eq!(CmdState::from_header(0xf), CmdState::Unknown(15));
    }

    #[test]
    fn fits() {
        let pkt = cmd_chain(&[member(1, 0)]).unwrap();
        assert_eq!(pkt.len(), 9);
        assert!(check_fits(&pkt, 36).is_ok());
        assert!(check_fits(&pkt, 32).is_err());
    }
}
