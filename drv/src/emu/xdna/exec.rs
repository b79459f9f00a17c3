//! Emulated EXEC_CMD: the driver's packet checks, then the "firmware": START_NPU runs the
//! kernel registered for the instruction stream; CMD_CHAIN runs its members in order.

use super::*;

impl XdnaEmu {
    pub(super) unsafe fn exec_cmd(
        &self,
        fd: RawFd,
        a: *mut amdxdna_drm_exec_cmd,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        if a.ext != 0
            || a.ext_flags != 0
            || a.r#type != AMDXDNA_CMD_SUBMIT_EXEC_BUF
            || a.cmd_count != 1
            || a.arg_count > MAX_ARG_COUNT
        {
            return Err(einval());
        }
        let mut args = Vec::with_capacity(a.arg_count as usize);
        for i in 0..u64::from(a.arg_count) {
            // SAFETY: `arg_count` handles at `args` (caller contract).
            args.push(unsafe { read_user::<u32>(a.args + 4 * i)? });
        }
        let cmd_handle = u32::try_from(a.cmd_handles).map_err(|_| einval())?;
        let mut st = self.st();
        let hang = st.hang_next > 0;
        let fail = !hang && st.fail_next > 0;
        let c = client(&mut st, fd)?;
        let ctx = c.ctxs.get(&a.hwctx).ok_or_else(einval)?;
        if ctx.cus.is_empty() {
            return Err(einval());
        }
        if args.iter().any(|h| !c.bos.contains_key(h)) {
            return Err(errno(libc::ENOENT));
        }
        // amdxdna_arg_bos_lookup (amdxdna_ctx.c) pins every argument BO, and
        // amdxdna_gem_pin_nolock (amdxdna_gem.c, 6.14) has no case for CMD BOs: EOPNOTSUPP.
        if args.iter().any(|h| c.bos[h].kind == AMDXDNA_BO_CMD) {
            return Err(errno(libc::EOPNOTSUPP));
        }
        let cmd = c
            .bos
            .get(&cmd_handle)
            .filter(|b| b.kind == AMDXDNA_BO_CMD)
            .ok_or_else(einval)?;
        let header = Header::decode(read_word(cmd, 0).ok_or_else(einval)?);
        let plan = match header.opcode {
            ERT_START_NPU => vec![cmd_handle],
            ERT_CMD_CHAIN => chain_members(c, cmd)?,
            _ => return Err(einval()),
        };
        for &h in &plan {
            validate_start_npu(c, c.bos.get(&h).ok_or_else(einval)?, ctx.cus.len())?;
        }
        let ctx_handle = a.hwctx;
        let syncobj = ctx.syncobj;
        let cus = ctx.cus.clone();
        let already_hung = ctx.hung;
        // Decided and validated: from here on the command is accepted.
        let kernels = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        let mut result: Result<(), (usize, String)> = Ok(());
        if !(hang || already_hung) {
            if fail {
                result = Err((0, "injected firmware error".into()));
            } else {
                let regions = regions(c, &args);
                for (i, &h) in plan.iter().enumerate() {
                    let bo = &c.bos[&h];
                    if let Err(e) = run_start_npu(c, bo, &cus, &regions, &kernels) {
                        result = Err((i, e));
                        break;
                    }
                    set_state(bo, ERT_CMD_STATE_COMPLETED);
                }
            }
        }
        drop(kernels);
        let cmd = &c.bos[&cmd_handle];
        let (state, ok) = match (&result, hang || already_hung) {
            (_, true) => (ERT_CMD_STATE_RUNNING, None),
            (Ok(()), _) => (ERT_CMD_STATE_COMPLETED, Some(true)),
            (Err((i, msg)), _) => {
                tracing::warn!(ctx = ctx_handle, index = i, error = %msg, "emulated NPU command failed");
                if header.opcode == ERT_CMD_CHAIN {
                    write_word(cmd, 3, *i as u32); // amdxdna_cmd_chain.error_index
                    set_state(&c.bos[&plan[*i]], ERT_CMD_STATE_ERROR);
                }
                (ERT_CMD_STATE_ERROR, Some(false))
            }
        };
        set_state(cmd, state);
        let s = c.syncobjs.entry(syncobj).or_default();
        s.submitted += 1;
        let seq = s.submitted;
        if ok.is_some() {
            s.signalled = seq;
        }
        let ctx = c.ctxs.get_mut(&ctx_handle).expect("looked up above");
        ctx.submissions += 1;
        ctx.hung |= hang;
        match ok {
            Some(true) => ctx.completions += 1,
            Some(false) => {
                ctx.completions += 1;
                ctx.errors += 1;
            }
            None => {}
        }
        st.stats.submissions += 1;
        match ok {
            Some(true) => st.stats.commands_completed += 1,
            Some(false) => st.stats.commands_failed += 1,
            None => {}
        }
        if hang {
            st.hang_next -= 1;
        } else if fail {
            st.fail_next -= 1;
        }
        a.seq = seq;
        Ok(0)
    }
}

fn read_word(bo: &EmuBo, i: u64) -> Option<u32> {
    let p = bo.cpu_ptr(4 * i, 4)?;
    // SAFETY: 4 bytes inside the BO's CPU view.
    Some(unsafe { std::ptr::read_unaligned(p as *const u32) })
}

fn write_word(bo: &EmuBo, i: u64, v: u32) {
    if let Some(p) = bo.cpu_ptr(4 * i, 4) {
        // SAFETY: as above.
        unsafe { std::ptr::write_unaligned(p as *mut u32, v) };
    }
}

fn set_state(bo: &EmuBo, state: u32) {
    if let Some(h) = read_word(bo, 0) {
        write_word(bo, 0, (h & !AMDXDNA_CMD_STATE_MASK) | state);
    }
}

/// The payload words of a command BO (after the header), checked against the BO size.
fn payload(bo: &EmuBo) -> io::Result<Vec<u32>> {
    let h = Header::decode(read_word(bo, 0).ok_or_else(einval)?);
    let count = u64::from(h.count);
    if count == 0 || 4 * (1 + count) > bo.size {
        return Err(einval());
    }
    Ok((1..=count)
        .map(|i| read_word(bo, i).expect("inside the BO"))
        .collect())
}

/// Bytes of the firmware chain buffer and of each slot's header (aie2_msg_priv.h:
/// `MAX_CHAIN_CMDBUF_SIZE`, packed `struct cmd_chain_slot_npu`).
const CHAIN_BUF_BYTES: usize = 4096;
const CHAIN_SLOT_HEADER_BYTES: usize = 52;

fn chain_members(c: &Client, chain: &EmuBo) -> io::Result<Vec<u32>> {
    let p = payload(chain)?;
    let n = *p.first().ok_or_else(einval)? as usize;
    if n == 0 || p.len() < 6 + 2 * n {
        return Err(einval());
    }
    let mut used = 0usize;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let h = u64::from(p[6 + 2 * i]) | (u64::from(p[7 + 2 * i]) << 32);
        let h = u32::try_from(h).map_err(|_| einval())?;
        let bo = c
            .bos
            .get(&h)
            .filter(|b| b.kind == AMDXDNA_BO_CMD)
            .ok_or_else(einval)?;
        let head = Header::decode(read_word(bo, 0).ok_or_else(einval)?);
        if head.opcode != ERT_START_NPU {
            return Err(einval());
        }
        // aie2_cmdlist_multi_execbuf copies every member into one 4 KiB buffer as a slot
        // header plus its property+argument words; when the next slot does not fit, the
        // fill fails with ENOSPC (reported here at EXEC_CMD, see the module note).
        let fixed = 1 + head.extra_cu_masks as usize + 4;
        let arg_words = (head.count as usize)
            .checked_sub(fixed)
            .ok_or_else(einval)?;
        used += CHAIN_SLOT_HEADER_BYTES + 4 * arg_words;
        if used > CHAIN_BUF_BYTES {
            return Err(errno(libc::ENOSPC));
        }
        out.push(h);
    }
    Ok(out)
}

/// What the driver checks before the firmware sees a START_NPU packet.
fn validate_start_npu(c: &Client, bo: &EmuBo, ncus: usize) -> io::Result<()> {
    let h = Header::decode(read_word(bo, 0).ok_or_else(einval)?);
    let p = payload(bo)?;
    let masks = 1 + h.extra_cu_masks as usize;
    if p.len() < masks + 4 {
        return Err(einval());
    }
    let cu = cu_index(&p[..masks]).ok_or_else(einval)?;
    if cu as usize >= ncus {
        return Err(einval());
    }
    let npu = &p[masks..];
    if npu.len() - 4 > MAX_NPU_ARGS_WORDS {
        return Err(einval());
    }
    let (addr, size) = (
        u64::from(npu[0]) | (u64::from(npu[1]) << 32),
        u64::from(npu[2]),
    );
    if npu[3] as usize > npu.len() - 4 {
        return Err(einval());
    }
    // The instruction stream must sit inside one DEV BO of the heap.
    let inside = c.bos.values().any(|b| {
        b.kind == AMDXDNA_BO_DEV
            && addr >= b.xdna_addr
            && size > 0
            && addr + size <= b.xdna_addr + b.size
    });
    if !inside {
        return Err(einval());
    }
    Ok(())
}

fn cu_index(masks: &[u32]) -> Option<u32> {
    masks
        .iter()
        .enumerate()
        .find(|(_, m)| **m != 0)
        .map(|(i, m)| i as u32 * 32 + m.trailing_zeros())
}

/// The NPU's view of the command's argument BOs and of the heap's DEV BOs. In SVA mode
/// the NPU reaches a non-DEV BO through the process's page tables, so only at the
/// addresses where it is mapped now (amdxdna_gem_uva); an unmapped BO faults.
fn regions(c: &Client, args: &[u32]) -> Vec<Region> {
    let mut out = Vec::new();
    for (h, b) in &c.bos {
        if b.kind == AMDXDNA_BO_DEV {
            out.extend(b.dev_ptr(0, b.size).map(|ptr| Region {
                addr: b.xdna_addr,
                len: b.size,
                ptr,
            }));
        } else if args.contains(h) && b.kind != AMDXDNA_BO_CMD && !b.has_dev_addr() {
            for &(addr, len) in &b.maps {
                let len = (len as u64).min(b.size);
                out.extend(b.dev_ptr(0, len).map(|ptr| Region {
                    addr: addr as u64,
                    len,
                    ptr,
                }));
            }
        }
    }
    out
}

fn run_start_npu(
    c: &Client,
    bo: &EmuBo,
    cus: &[(u64, u8)],
    regions: &[Region],
    kernels: &HashMap<u64, (String, NpuFn)>,
) -> Result<(), String> {
    let h = Header::decode(read_word(bo, 0).ok_or("unreadable command BO")?);
    let p = payload(bo).map_err(|e| e.to_string())?;
    let masks = 1 + h.extra_cu_masks as usize;
    let cu = cu_index(&p[..masks]).ok_or("no CU selected")?;
    let npu = &p[masks..];
    let (addr, size) = (
        u64::from(npu[0]) | (u64::from(npu[1]) << 32),
        npu[2] as usize,
    );
    let instr_bo = c
        .bos
        .values()
        .find(|b| {
            b.kind == AMDXDNA_BO_DEV
                && addr >= b.xdna_addr
                && addr + size as u64 <= b.xdna_addr + b.size
        })
        .ok_or("instruction buffer left the heap")?;
    let ip = instr_bo
        .dev_ptr(addr - instr_bo.xdna_addr, size as u64)
        .ok_or("instruction buffer unreadable")?;
    // SAFETY: `size` bytes of the DEV BO's device view.
    let hash = instruction_hash(unsafe { std::slice::from_raw_parts(ip, size) });
    let (name, f) = kernels.get(&hash).ok_or_else(|| {
        format!("no kernel registered for instruction stream hash {hash:#018x} (was the instruction BO flushed with SYNC_BO?)")
    })?;
    let mut job = NpuJob {
        args: &npu[4..],
        cu_index: cu,
        pdi_hash: cus[cu as usize].0,
        regions,
    };
    tracing::debug!(kernel = %name, cu, "emulated NPU runs");
    f(&mut job)
}
