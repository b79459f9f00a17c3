//! Emulated buffer objects (CREATE_BO, GET_BO_INFO, SYNC_BO, GEM_CLOSE, PRIME), hardware
//! contexts (CREATE/CONFIG/DESTROY_HWCTX) and timeline syncobjs (wait, query, destroy).

use super::*;

impl XdnaEmu {
    pub(super) unsafe fn create_bo(
        &self,
        emu: &Emulator,
        fd: RawFd,
        a: *mut amdxdna_drm_create_bo,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        if a.flags != 0 || a.size == 0 {
            return Err(einval());
        }
        let coherent = self.cfg.coherent;
        let page = page_size() as u64;
        let mut st = self.st();
        let size = a.size.next_multiple_of(page);
        let (store, store_off, xdna, imported, pinned) = match a.r#type {
            AMDXDNA_BO_SHARE if a.vaddr == 0 => {
                let s = Store::new(
                    CpuMem::Backing(Backing::new("xdna-share", size as usize)?),
                    size,
                    coherent,
                );
                (s, 0, AMDXDNA_INVALID_ADDR, None, 0)
            }
            AMDXDNA_BO_SHARE => {
                if self.cfg.driver_minor < crate::xdna::device::MINOR_USER_MEMORY_BO {
                    return Err(einval());
                }
                // SAFETY: `vaddr` points at a va table (caller contract).
                let head: amdxdna_drm_va_tbl = unsafe { read_user(a.vaddr)? };
                if head.num_entries == 0 {
                    let buf = emu.dmabuf(head.dmabuf_fd)?;
                    let len = buf.len();
                    let s = Store::new(CpuMem::Import(buf.map()?, buf.clone()), len, coherent);
                    (s, 0, AMDXDNA_INVALID_ADDR, Some(buf), 0)
                } else {
                    let mut segs = Vec::new();
                    let mut total = 0u64;
                    for i in 0..head.num_entries as u64 {
                        // SAFETY: `num_entries` entries follow the header (caller contract).
                        let e: amdxdna_drm_va_entry = unsafe { read_user(a.vaddr + 8 + i * 16)? };
                        if !e.vaddr.is_multiple_of(page)
                            || !e.len.is_multiple_of(page)
                            || e.len == 0
                        {
                            return Err(einval());
                        }
                        total = total.checked_add(e.len).ok_or_else(einval)?;
                        segs.push((e.vaddr as usize, e.len as usize));
                    }
                    let (soft, _) = emu.memlock_limit()?;
                    let already: u64 = st.clients.values().map(|c| c.pinned).sum();
                    if soft == 0 {
                        return Err(errno(libc::EPERM));
                    }
                    if soft != u64::MAX && already + total > soft {
                        return Err(errno(libc::ENOMEM));
                    }
                    let s = Store::new(CpuMem::User(segs), total, coherent);
                    (s, 0, AMDXDNA_INVALID_ADDR, None, total)
                }
            }
            AMDXDNA_BO_DEV_HEAP => {
                // amdxdna_drm_create_dev_heap (amdxdna_gem.c, 6.14): larger than the part's
                // dev_mem_size (64 MiB on AIE2) is EINVAL, checked before the second-heap
                // EBUSY.
                if a.size > AIE2_DEVM_SIZE {
                    return Err(einval());
                }
                let c = client(&mut st, fd)?;
                if c.heap.is_some() {
                    return Err(errno(libc::EBUSY));
                }
                let s = Store::new(
                    CpuMem::Backing(Backing::new("xdna-heap", size as usize)?),
                    size,
                    coherent,
                );
                (s, 0, AIE2_DEVM_BASE, None, 0)
            }
            AMDXDNA_BO_DEV => {
                let c = client(&mut st, fd)?;
                let Some((_, heap)) = c.heap.clone() else {
                    return Err(einval());
                };
                if !c.heap_mapped {
                    return Err(einval());
                }
                let size = a.size.next_multiple_of(AIE2_DEV_BO_ALIGN);
                let mut ranges = c.dev_ranges.clone();
                ranges.sort();
                let mut at = 0u64;
                for &(o, s) in &ranges {
                    if o >= at + size {
                        break;
                    }
                    at = at.max(o + s);
                }
                if at + size > heap.len {
                    return Err(errno(libc::ENOMEM));
                }
                c.dev_ranges.push((at, size));
                (heap, at, AIE2_DEVM_BASE + at, None, 0)
            }
            AMDXDNA_BO_CMD => {
                if a.size > XDNA_MAX_CMD_BO_SIZE || a.size < 4 {
                    return Err(einval());
                }
                // The kernel reads command BOs through its own mapping: always coherent.
                let s = Store::new(
                    CpuMem::Backing(Backing::new("xdna-cmd", size as usize)?),
                    size,
                    true,
                );
                (s, 0, AMDXDNA_INVALID_ADDR, None, 0)
            }
            _ => return Err(einval()),
        };
        let size = if a.r#type == AMDXDNA_BO_DEV {
            a.size.next_multiple_of(AIE2_DEV_BO_ALIGN)
        } else {
            store.len
        };
        let c = client(&mut st, fd)?;
        let handle = c.new_handle();
        if a.r#type == AMDXDNA_BO_DEV_HEAP {
            c.heap = Some((handle, store.clone()));
        }
        c.pinned += pinned;
        let map_offset = u64::from(handle) << 32;
        c.bos.insert(
            handle,
            EmuBo {
                kind: a.r#type,
                size,
                xdna_addr: xdna,
                map_offset,
                store,
                store_off,
                imported,
                pinned,
                maps: Vec::new(),
                userptr: None,
            },
        );
        a.handle = handle;
        Ok(0)
    }

    pub(super) unsafe fn get_bo_info(
        &self,
        fd: RawFd,
        a: *mut amdxdna_drm_get_bo_info,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        if a.ext != 0 || a.ext_flags != 0 || a.pad != 0 {
            return Err(einval());
        }
        let mut st = self.st();
        let bo = client(&mut st, fd)?
            .bos
            .get(&a.handle)
            .ok_or_else(|| errno(libc::ENOENT))?;
        a.map_offset = bo.map_offset;
        let uva = bo.maps.first().map_or(AMDXDNA_INVALID_ADDR, |m| m.0 as u64);
        (a.xdna_addr, a.vaddr) = if bo.has_dev_addr() {
            // DEV BOs and the heap have a device address; the emulator does not track
            // the heap's CPU address for DEV BOs' vaddr (a deviation the driver checks
            // for with `vaddr != 0`).
            (bo.xdna_addr, 0)
        } else {
            match self.cfg.kernel {
                // amdxdna_drm_get_bo_info_ioctl (6.14): xdna_addr = mem.dev_addr, which
                // only amdxdna_drm_create_dev_heap and amdxdna_gem_insert_node_locked
                // set; vaddr = mem.userptr, set by amdxdna_gem_obj_mmap ->
                // amdxdna_hmm_register and not cleared at unmap.
                XdnaKernel::Linux6_14 => (
                    AMDXDNA_INVALID_ADDR,
                    bo.userptr.unwrap_or(AMDXDNA_INVALID_ADDR),
                ),
                // Later kernels: xdna_addr = amdxdna_gem_dev_addr -> amdxdna_obj_dma_addr,
                // which in PASID mode is amdxdna_gem_uva: the first mapping not yet
                // unmapped, ~0 when there is none.
                XdnaKernel::Newer => (uva, uva),
            }
        };
        Ok(0)
    }

    pub(super) unsafe fn sync_bo(&self, fd: RawFd, a: *mut amdxdna_drm_sync_bo) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &*a };
        let mut st = self.st();
        let bo = client(&mut st, fd)?
            .bos
            .get(&a.handle)
            .ok_or_else(|| errno(libc::ENOENT))?;
        if a.direction > SYNC_DIRECT_FROM_DEVICE
            || a.offset.checked_add(a.size).is_none_or(|e| e > bo.size)
        {
            return Err(einval());
        }
        let to_device = a.direction == SYNC_DIRECT_TO_DEVICE;
        bo.store.sync(bo.store_off + a.offset, a.size, to_device);
        if to_device {
            st.stats.syncs_to_device += 1;
        } else {
            st.stats.syncs_from_device += 1;
        }
        Ok(0)
    }

    pub(super) unsafe fn gem_close(&self, fd: RawFd, a: *mut drm_gem_close) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &*a };
        if a.pad != 0 {
            return Err(einval());
        }
        let mut st = self.st();
        let c = client(&mut st, fd)?;
        let bo = c.bos.remove(&a.handle).ok_or_else(einval)?;
        c.pinned -= bo.pinned;
        if bo.kind == AMDXDNA_BO_DEV {
            c.dev_ranges.retain(|&(o, _)| o != bo.store_off);
        }
        if c.heap.as_ref().is_some_and(|(h, _)| *h == a.handle) {
            // The heap's pages stay while DEV BOs use them; a new heap is allowed after.
            c.heap = None;
            c.heap_mapped = false;
        }
        Ok(0)
    }

    pub(super) unsafe fn prime_import(
        &self,
        emu: &Emulator,
        fd: RawFd,
        a: *mut drm_prime_handle,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        let buf = emu.dmabuf(a.fd)?;
        let mut st = self.st();
        // A dma-buf this device exported comes back as the same GEM object in every kernel
        // (drm_gem_prime_import_dev's self-import check comes first).
        let own = st
            .exported
            .iter()
            .find(|(w, _)| w.upgrade().is_some_and(|b| Arc::ptr_eq(&b, &buf)))
            .map(|&(_, owner)| owner);
        if let Some((owner_fd, handle)) = own {
            if owner_fd == fd && client(&mut st, fd)?.bos.contains_key(&handle) {
                a.handle = handle;
                return Ok(0);
            }
        }
        // 6.14's amdxdna_drm_drv sets neither gem_prime_import nor
        // gem_prime_import_sg_table: drm_prime_fd_to_handle_ioctl ->
        // drm_gem_prime_fd_to_handle -> drm_gem_prime_import -> drm_gem_prime_import_dev
        // returns -EINVAL for any dma-buf another driver exported.
        if self.cfg.kernel == XdnaKernel::Linux6_14 && own.is_none() {
            return Err(einval());
        }
        // Importing the same dma-buf twice gives the same GEM handle, as DRM PRIME does.
        if let Some((&h, _)) = client(&mut st, fd)?
            .bos
            .iter()
            .find(|(_, b)| b.imported.as_ref().is_some_and(|i| Arc::ptr_eq(i, &buf)))
        {
            a.handle = h;
            return Ok(0);
        }
        let len = buf.len();
        let store = Store::new(
            CpuMem::Import(buf.map()?, buf.clone()),
            len,
            self.cfg.coherent,
        );
        let c = client(&mut st, fd)?;
        let handle = c.new_handle();
        let map_offset = u64::from(handle) << 32;
        c.bos.insert(
            handle,
            EmuBo {
                kind: AMDXDNA_BO_SHARE,
                size: len,
                xdna_addr: AMDXDNA_INVALID_ADDR,
                map_offset,
                store,
                store_off: 0,
                imported: Some(buf),
                pinned: 0,
                maps: Vec::new(),
                userptr: None,
            },
        );
        a.handle = handle;
        Ok(0)
    }

    pub(super) unsafe fn prime_export(
        &self,
        emu: &Emulator,
        fd: RawFd,
        a: *mut drm_prime_handle,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        let mut st = self.st();
        let bo = client(&mut st, fd)?
            .bos
            .get(&a.handle)
            .ok_or_else(|| errno(libc::ENOENT))?;
        let CpuMem::Backing(b) = &bo.store.cpu else {
            return Err(errno(libc::EOPNOTSUPP));
        };
        if bo.kind != AMDXDNA_BO_SHARE {
            return Err(errno(libc::EOPNOTSUPP));
        }
        let chunk = DmaChunk {
            memfd: dup_fd(b.fd())?,
            offset: 0,
            size: bo.size,
        };
        drop(st);
        a.fd = emu.new_dmabuf(DmaBuf {
            exporter: "amdxdna",
            chunks: vec![chunk],
        })?;
        let buf = emu.dmabuf(a.fd)?;
        let mut st = self.st();
        st.exported.retain(|(w, _)| w.strong_count() > 0);
        st.exported.push((Arc::downgrade(&buf), (fd, a.handle)));
        Ok(0)
    }

    pub(super) unsafe fn create_hwctx(
        &self,
        fd: RawFd,
        a: *mut amdxdna_drm_create_hwctx,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        if a.ext != 0 || a.ext_flags != 0 || a.umq_bo != 0 || a.log_buf_bo != 0 || a.mem_size != 0 {
            return Err(einval());
        }
        let qos: amdxdna_qos_info = if a.qos_p == 0 {
            amdxdna_qos_info::default()
        } else {
            // SAFETY: `qos_p` points at a qos_info (caller contract).
            unsafe { read_user(a.qos_p)? }
        };
        // aie2_ctx.c (6.14): num_col = num_tiles / metadata.core.row_count, with the row
        // count the firmware reports (AIE_METADATA's core.row_count, rows minus the shim
        // and memory rows here); 0 or more than the array's columns is EINVAL. A remainder
        // is silently dropped, as the kernel does.
        let rows = u32::from(self.cfg.rows - 2);
        let cols = a.num_tiles / rows;
        if cols == 0 || cols > u32::from(self.cfg.cols) {
            return Err(einval());
        }
        let mut st = self.st();
        let total: usize = st.clients.values().map(|c| c.ctxs.len()).sum();
        if total >= self.cfg.max_hwctx {
            return Err(errno(libc::EBUSY));
        }
        st.next_ctx_id += 1;
        let id = st.next_ctx_id;
        let c = client(&mut st, fd)?;
        if c.heap.is_none() {
            return Err(errno(libc::ENOENT));
        }
        let syncobj = c.new_handle();
        c.syncobjs.insert(syncobj, Syncobj::default());
        let handle = c.new_handle();
        c.ctxs.insert(
            handle,
            Ctx {
                id,
                cols,
                syncobj,
                cus: Vec::new(),
                hung: false,
                submissions: 0,
                completions: 0,
                errors: 0,
                qos,
            },
        );
        a.handle = handle;
        a.syncobj_handle = syncobj;
        a.umq_doorbell = 0;
        Ok(0)
    }

    pub(super) unsafe fn config_hwctx(
        &self,
        fd: RawFd,
        a: *mut amdxdna_drm_config_hwctx,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &*a };
        if a.pad != 0 {
            return Err(einval());
        }
        match a.param_type {
            DRM_AMDXDNA_HWCTX_CONFIG_CU => {}
            DRM_AMDXDNA_HWCTX_ASSIGN_DBG_BUF | DRM_AMDXDNA_HWCTX_REMOVE_DBG_BUF => {
                return Err(errno(libc::EOPNOTSUPP))
            }
            _ => return Err(einval()),
        }
        if a.param_val_size < 8 || a.param_val_size > 4096 {
            return Err(einval());
        }
        // SAFETY: `param_val` holds `param_val_size` bytes (caller contract).
        let head: amdxdna_hwctx_param_config_cu = unsafe { read_user(a.param_val)? };
        let n = usize::from(head.num_cus);
        if n == 0 || n > MAX_CUS || head.pad != [0; 3] || (a.param_val_size as usize) < 8 + 8 * n {
            return Err(einval());
        }
        let mut st = self.st();
        let c = client(&mut st, fd)?;
        let mut cus = Vec::with_capacity(n);
        for i in 0..n as u64 {
            // SAFETY: inside the `param_val_size` bytes checked above.
            let cu: amdxdna_cu_config = unsafe { read_user(a.param_val + 8 + 8 * i)? };
            let bo = c
                .bos
                .get(&cu.cu_bo)
                .filter(|b| b.kind == AMDXDNA_BO_DEV)
                .ok_or_else(einval)?;
            let pdi = bo.dev_ptr(0, bo.size).ok_or_else(einval)?;
            // SAFETY: `size` bytes of the BO's device view.
            let hash =
                instruction_hash(unsafe { std::slice::from_raw_parts(pdi, bo.size as usize) });
            cus.push((hash, cu.cu_func));
        }
        let ctx = c.ctxs.get_mut(&a.handle).ok_or_else(einval)?;
        if !ctx.cus.is_empty() {
            return Err(einval());
        }
        ctx.cus = cus;
        Ok(0)
    }

    pub(super) unsafe fn destroy_hwctx(
        &self,
        fd: RawFd,
        a: *mut amdxdna_drm_destroy_hwctx,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &*a };
        if a.pad != 0 {
            return Err(einval());
        }
        let mut st = self.st();
        client(&mut st, fd)?
            .ctxs
            .remove(&a.handle)
            .ok_or_else(einval)?;
        Ok(0)
    }

    pub(super) unsafe fn syncobj_destroy(
        &self,
        fd: RawFd,
        a: *mut drm_syncobj_destroy,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &*a };
        if a.pad != 0 {
            return Err(einval());
        }
        let mut st = self.st();
        let c = client(&mut st, fd)?;
        c.syncobjs.remove(&a.handle).ok_or_else(einval)?;
        Ok(0)
    }

    pub(super) unsafe fn syncobj_query(
        &self,
        fd: RawFd,
        a: *mut drm_syncobj_timeline_array,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &*a };
        let mut st = self.st();
        let c = client(&mut st, fd)?;
        for i in 0..u64::from(a.count_handles) {
            // SAFETY: `count_handles` handles and points (caller contract).
            let h: u32 = unsafe { read_user(a.handles + 4 * i)? };
            let s = c.syncobjs.get(&h).ok_or_else(|| errno(libc::ENOENT))?;
            // SAFETY: as above.
            unsafe { write_user(a.points + 8 * i, &s.signalled.to_le_bytes(), 8)? };
        }
        Ok(0)
    }

    pub(super) unsafe fn timeline_wait(
        &self,
        fd: RawFd,
        a: *mut drm_syncobj_timeline_wait,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        if a.count_handles == 0 || a.flags & !0xf != 0 {
            return Err(einval());
        }
        let mut wanted = Vec::new();
        for i in 0..u64::from(a.count_handles) {
            // SAFETY: `count_handles` handles and points (caller contract).
            let h: u32 = unsafe { read_user(a.handles + 4 * i)? };
            // SAFETY: as above.
            let p: u64 = unsafe { read_user(a.points + 8 * i)? };
            wanted.push((h, p));
        }
        loop {
            {
                let mut st = self.st();
                let c = client(&mut st, fd)?;
                let mut done = 0;
                for (i, &(h, p)) in wanted.iter().enumerate() {
                    let s = c.syncobjs.get(&h).ok_or_else(|| errno(libc::ENOENT))?;
                    if p > s.submitted && a.flags & DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT == 0 {
                        return Err(einval());
                    }
                    if s.signalled >= p {
                        done += 1;
                        if a.flags & DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL == 0 {
                            a.first_signaled = i as u32;
                            return Ok(0);
                        }
                    }
                }
                if done == wanted.len() {
                    return Ok(0);
                }
            }
            // Nothing in the emulator signals later (commands run inside EXEC_CMD), so an
            // unsignalled point waits out the deadline like a hung NPU.
            let now = crate::xdna::hwctx::monotonic_ns();
            if now >= a.timeout_nsec {
                return Err(errno(libc::ETIME));
            }
            std::thread::sleep(Duration::from_nanos(
                (a.timeout_nsec - now).min(5_000_000) as u64
            ));
        }
    }
}
