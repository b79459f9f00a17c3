//! Hardware contexts: a partition of NPU columns loaded with a PDI, a timeline syncobj
//! signalled per finished command, and command submission (single packets and chains).

use std::sync::Arc;
use std::time::Duration;

use super::bo::{Bo, BoKind, DevHeap};
use super::device::{DevInner, XdnaDevice};
use super::error::{sys, XdnaError};
use super::ert::{self, CmdState};
use super::ioctl;
use crate::flags::SyncobjWaitFlags;
use crate::sys::amdxdna::*;

/// Scheduling priority hint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    /// Let the driver choose.
    #[default]
    Default,
    Realtime,
    High,
    Normal,
    Low,
}

/// QoS hints for CREATE_HWCTX; all zero lets the driver choose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Qos {
    pub gops: u32,
    pub fps: u32,
    pub dma_bandwidth: u32,
    pub latency: u32,
    pub frame_exec_time: u32,
    pub priority: Priority,
}

impl Qos {
    fn raw(&self) -> amdxdna_qos_info {
        amdxdna_qos_info {
            gops: self.gops,
            fps: self.fps,
            dma_bandwidth: self.dma_bandwidth,
            latency: self.latency,
            frame_exec_time: self.frame_exec_time,
            priority: match self.priority {
                Priority::Default => 0,
                Priority::Realtime => AMDXDNA_QOS_REALTIME_PRIORITY,
                Priority::High => AMDXDNA_QOS_HIGH_PRIORITY,
                Priority::Normal => AMDXDNA_QOS_NORMAL_PRIORITY,
                Priority::Low => AMDXDNA_QOS_LOW_PRIORITY,
            },
        }
    }
}

/// A hardware context. Destroyed (and its syncobj handle dropped) on drop.
pub struct HwContext {
    dev: Arc<DevInner>,
    _heap: Arc<DevHeap>,
    handle: u32,
    syncobj: u32,
    columns: u16,
    cus: usize,
}

impl std::fmt::Debug for HwContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HwContext(#{}, syncobj {}, {} columns, {} CUs)",
            self.handle, self.syncobj, self.columns, self.cus
        )
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock DRM syncobj deadlines use).
pub fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

impl HwContext {
    /// A context over `columns` NPU columns. The device heap must exist (it is created if
    /// missing); `max_opc` is the xclbin's operations per cycle.
    pub fn create(
        dev: &XdnaDevice,
        columns: u16,
        max_opc: u32,
        qos: Qos,
    ) -> Result<HwContext, XdnaError> {
        if columns == 0 {
            return Err(XdnaError::Invalid(
                "a hardware context needs at least one column".into(),
            ));
        }
        let heap = dev.heap()?;
        // The driver turns `num_tiles` back into columns by dividing by the core row count
        // the firmware reported (aie2_ctx.c, `num_tiles / ndev->metadata.core.row_count`),
        // so the same count must be used here; it differs between NPU generations.
        let core_rows = u32::from(dev.aie_metadata()?.core.row_count);
        if core_rows == 0 {
            return Err(XdnaError::Invalid(format!(
                "{} reports 0 core tile rows (GET_INFO AIE_METADATA), so no context can be sized: update the NPU firmware",
                dev.inner.target()
            )));
        }
        let mut q = qos.raw();
        let mut a = amdxdna_drm_create_hwctx {
            qos_p: &mut q as *mut amdxdna_qos_info as u64,
            max_opc,
            num_tiles: u32::from(columns) * core_rows,
            ..Default::default()
        };
        let inner = &dev.inner;
        // SAFETY: `qos_p` points at `q`, alive for the call.
        unsafe { ioctl::amdxdna_create_hwctx(inner.io(), inner.fd.raw(), &mut a) }.map_err(
            |e| {
                sys(
                    "DRM_IOCTL_AMDXDNA_CREATE_HWCTX",
                    &format!("{} ({columns} columns)", inner.target()),
                    e,
                )
            },
        )?;
        tracing::debug!(
            ctx = a.handle,
            syncobj = a.syncobj_handle,
            columns,
            "NPU context created"
        );
        Ok(HwContext {
            dev: inner.clone(),
            _heap: heap,
            handle: a.handle,
            syncobj: a.syncobj_handle,
            columns,
            cus: 0,
        })
    }

    pub fn handle(&self) -> u32 {
        self.handle
    }
    pub fn syncobj(&self) -> u32 {
        self.syncobj
    }
    pub fn columns(&self) -> u16 {
        self.columns
    }

    /// CONFIG_CU: loads the partition. Each CU is a DEV BO holding a PDI and its function
    /// (`cu_func`); CU `i` is what a packet's CU mask bit `i` selects. Once per context.
    pub fn configure(&mut self, cus: &[(&Bo, u8)]) -> Result<(), XdnaError> {
        if cus.is_empty() || cus.len() > MAX_CUS {
            return Err(XdnaError::Invalid(format!(
                "CONFIG_CU takes 1..={MAX_CUS} CUs, got {}",
                cus.len()
            )));
        }
        if self.cus != 0 {
            return Err(XdnaError::Invalid(format!(
                "context {} is already configured",
                self.handle
            )));
        }
        if let Some((bo, _)) = cus.iter().find(|(bo, _)| bo.kind() != BoKind::Dev) {
            return Err(XdnaError::Invalid(format!(
                "a CU's PDI must live in a DEV BO (heap), not {bo:?}"
            )));
        }
        let mut payload = Vec::with_capacity(8 + cus.len() * 8);
        let head = amdxdna_hwctx_param_config_cu {
            num_cus: cus.len() as u16,
            pad: [0; 3],
        };
        payload.extend_from_slice(&head.num_cus.to_le_bytes());
        payload.extend_from_slice(&[0u8; 6]);
        for (bo, func) in cus {
            payload.extend_from_slice(&bo.handle().to_le_bytes());
            payload.extend_from_slice(&[*func, 0, 0, 0]);
        }
        let mut a = amdxdna_drm_config_hwctx {
            handle: self.handle,
            param_type: DRM_AMDXDNA_HWCTX_CONFIG_CU,
            param_val: payload.as_ptr() as u64,
            param_val_size: payload.len() as u32,
            pad: 0,
        };
        // SAFETY: `param_val` points at `payload` (`param_val_size` bytes) for the call.
        unsafe { ioctl::amdxdna_config_hwctx(self.dev.io(), self.dev.fd.raw(), &mut a) }.map_err(
            |e| {
                sys(
                    "DRM_IOCTL_AMDXDNA_CONFIG_HWCTX",
                    &format!("{} (context {}, CONFIG_CU)", self.dev.target(), self.handle),
                    e,
                )
            },
        )?;
        self.cus = cus.len();
        Ok(())
    }

    /// EXEC_CMD of one command BO; `args` are the instruction and data BOs the command
    /// touches (pinned and kept alive by the driver until it completes). Returns the
    /// timeline point to wait for.
    pub fn submit(&self, cmd: &Bo, args: &[&Bo]) -> Result<u64, XdnaError> {
        if cmd.kind() != BoKind::Cmd {
            return Err(XdnaError::Invalid(format!(
                "EXEC_CMD needs a CMD BO, not {cmd:?}"
            )));
        }
        // The driver pins every argument BO (amdxdna_arg_bos_lookup) and the 6.14 driver
        // cannot pin CMD BOs (EOPNOTSUPP); a chain's members are found through the chain
        // packet, not the argument list.
        if let Some(bad) = args.iter().find(|b| b.kind() == BoKind::Cmd) {
            return Err(XdnaError::Invalid(format!(
                "EXEC_CMD argument {bad:?} is a CMD BO: the driver pins argument BOs and cannot pin command BOs (EOPNOTSUPP); pass only instruction and data BOs"
            )));
        }
        if self.cus == 0 {
            return Err(XdnaError::Invalid(format!(
                "context {} has no CUs: configure it first",
                self.handle
            )));
        }
        let handles: Vec<u32> = args.iter().map(|b| b.handle()).collect();
        let mut a = amdxdna_drm_exec_cmd {
            hwctx: self.handle,
            r#type: AMDXDNA_CMD_SUBMIT_EXEC_BUF,
            cmd_handles: u64::from(cmd.handle()),
            args: handles.as_ptr() as u64,
            cmd_count: 1,
            arg_count: handles.len() as u32,
            ..Default::default()
        };
        // SAFETY: `args` points at `handles` (`arg_count` u32s) for the call.
        unsafe { ioctl::amdxdna_exec_cmd(self.dev.io(), self.dev.fd.raw(), &mut a) }.map_err(
            |e| {
                sys(
                    "DRM_IOCTL_AMDXDNA_EXEC_CMD",
                    &format!("{} (context {}, {cmd:?})", self.dev.target(), self.handle),
                    e,
                )
            },
        )?;
        Ok(a.seq)
    }

    /// Waits for timeline point `seq` until `timeout` from now (an absolute CLOCK_MONOTONIC
    /// deadline, so a retried wait does not extend it).
    pub fn wait(&self, seq: u64, timeout: Duration) -> Result<(), XdnaError> {
        let deadline =
            monotonic_ns().saturating_add(i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX));
        self.wait_until(seq, deadline, timeout)
    }

    fn wait_until(&self, seq: u64, deadline_ns: i64, timeout: Duration) -> Result<(), XdnaError> {
        let handles = [self.syncobj];
        let points = [seq];
        let mut a = drm_syncobj_timeline_wait {
            handles: handles.as_ptr() as u64,
            points: points.as_ptr() as u64,
            timeout_nsec: deadline_ns,
            count_handles: 1,
            flags: (SyncobjWaitFlags::WAIT_ALL | SyncobjWaitFlags::WAIT_FOR_SUBMIT).bits(),
            ..Default::default()
        };
        loop {
            // SAFETY: `handles`/`points` hold `count_handles` entries for the call.
            match unsafe {
                ioctl::drm_syncobj_timeline_wait(self.dev.io(), self.dev.fd.raw(), &mut a)
            } {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => {
                    return Err(XdnaError::Timeout {
                        ctx: self.handle,
                        seq,
                        timeout,
                    })
                }
                // Interrupted: the deadline is absolute, so waiting again keeps it.
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => {
                    return Err(sys(
                        "DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT",
                        &format!("{} (context {})", self.dev.target(), self.handle),
                        e,
                    ))
                }
            }
        }
    }

    /// The last timeline point signalled (SYNCOBJ_QUERY).
    pub fn completed_point(&self) -> Result<u64, XdnaError> {
        let handles = [self.syncobj];
        let mut points = [0u64];
        let mut a = drm_syncobj_timeline_array {
            handles: handles.as_ptr() as u64,
            points: points.as_mut_ptr() as u64,
            count_handles: 1,
            flags: 0,
        };
        // SAFETY: one handle in, one point out, both alive for the call.
        unsafe { ioctl::drm_syncobj_query(self.dev.io(), self.dev.fd.raw(), &mut a) }
            .map_err(|e| sys("DRM_IOCTL_SYNCOBJ_QUERY", &self.dev.target(), e))?;
        Ok(points[0])
    }

    /// Writes `packet` into `cmd`, submits it, waits, and checks the state the driver wrote
    /// back. A command that ends in any state but COMPLETED is an error.
    pub fn execute(
        &self,
        cmd: &mut Bo,
        packet: &[u32],
        args: &[&Bo],
        timeout: Duration,
    ) -> Result<(), XdnaError> {
        write_packet(cmd, packet)?;
        let seq = self.submit(cmd, args)?;
        self.wait(seq, timeout)?;
        match packet_state(cmd)? {
            CmdState::Completed => Ok(()),
            state => Err(XdnaError::CommandFailed {
                ctx: self.handle,
                seq,
                state,
                detail: String::new(),
            }),
        }
    }

    /// Runs already-written START_NPU command BOs as one CMD_CHAIN through `chain` (a CMD
    /// BO of its own): one submission, one wait. `args` are the instruction and data BOs of
    /// all members. On failure names the failing command.
    pub fn execute_chain(
        &self,
        chain: &mut Bo,
        cmds: &[&Bo],
        args: &[&Bo],
        timeout: Duration,
    ) -> Result<(), XdnaError> {
        let members = cmds
            .iter()
            .map(|c| {
                let head = c.as_slice()?;
                let words: Vec<u32> = head[..head.len().min(4 * 8)]
                    .chunks_exact(4)
                    .map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes")))
                    .collect();
                Ok(ert::ChainMember {
                    handle: c.handle(),
                    arg_words: ert::start_npu_arg_words(&words)?,
                })
            })
            .collect::<Result<Vec<_>, XdnaError>>()?;
        let packet = ert::cmd_chain(&members)?;
        write_packet(chain, &packet)?;
        // Only the instruction and data BOs: the members are named by the chain packet.
        let seq = self.submit(chain, args)?;
        self.wait(seq, timeout)?;
        match packet_state(chain)? {
            CmdState::Completed => Ok(()),
            state => {
                let words = chain.as_slice()?;
                let error_index = u32::from_le_bytes(words[12..16].try_into().expect("4 bytes"));
                let sub = cmds.get(error_index as usize).map(|c| packet_state(c));
                Err(XdnaError::CommandFailed {
                    ctx: self.handle,
                    seq,
                    state,
                    detail: format!(" at chain entry {error_index} (its state: {sub:?})"),
                })
            }
        }
    }
}

/// Writes a packet into a command BO (the driver reads it through its kernel mapping, so
/// no cache maintenance is needed) after checking that it fits.
pub fn write_packet(cmd: &mut Bo, packet: &[u32]) -> Result<(), XdnaError> {
    ert::check_fits(packet, cmd.size())?;
    let bytes = ert::to_bytes(packet);
    cmd.as_mut_slice()?[..bytes.len()].copy_from_slice(&bytes);
    Ok(())
}

/// The state in a command BO's header.
pub fn packet_state(cmd: &Bo) -> Result<CmdState, XdnaError> {
    let b = cmd.as_slice()?;
    Ok(CmdState::from_header(u32::from_le_bytes(
        b[0..4].try_into().expect("4 bytes"),
    )))
}

impl Drop for HwContext {
    fn drop(&mut self) {
        let mut a = amdxdna_drm_destroy_hwctx {
            handle: self.handle,
            pad: 0,
        };
        // SAFETY: no pointers inside.
        let r = unsafe { ioctl::amdxdna_destroy_hwctx(self.dev.io(), self.dev.fd.raw(), &mut a) };
        if let Err(e) = r {
            tracing::warn!(ctx = self.handle, error = %e, "DRM_IOCTL_AMDXDNA_DESTROY_HWCTX failed");
        }
        // The context's syncobj handle lives in this file's table until dropped.
        let mut s = drm_syncobj_destroy {
            handle: self.syncobj,
            pad: 0,
        };
        // SAFETY: no pointers inside.
        let r = unsafe { ioctl::drm_syncobj_destroy(self.dev.io(), self.dev.fd.raw(), &mut s) };
        if let Err(e) = r {
            tracing::debug!(syncobj = self.syncobj, error = %e, "DRM_IOCTL_SYNCOBJ_DESTROY failed");
        }
    }
}
