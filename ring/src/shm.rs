//! The operating-system boundary: memfd creation and sealing, the double mapping of the
//! ring, raw copies in and out of shared memory, and adopting received file descriptors.
//!
//! This is the only module of the crate with `unsafe` code. Everything it hands out is
//! bounds-checked against the mapping, so the rest of the crate works with safe methods.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::stat::fstat;
use nix::sys::uio::{pread, pwrite};
use nix::unistd::ftruncate;
use portable_atomic::AtomicU128;
use zerocopy::{FromBytes, IntoBytes};

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!(
    "ringside supports x86_64 and aarch64: the read-only mapping relies on atomic loads being plain load instructions"
);

use crate::layout::{CLAIM_OFFSET, HEADER_REGION_LEN, HeaderError, RingConfig, RingHeader};

/// Seals every ring must carry: nobody can shrink or grow it, and nobody can change the seals.
pub const RING_SEALS: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

fn sys(op: &'static str) -> impl FnOnce(nix::Error) -> RingError {
    move |source| RingError::Sys { op, source }
}

/// Creates the ring's memfd: sized, header written with `pwrite`, sealed.
///
/// The creator never maps the ring writable: the header goes in through the fd.
///
/// # Errors
///
/// [`RingError::Sys`] naming the system call that failed (`memfd_create`, `ftruncate`,
/// `pwrite`, sealing).
pub fn create_ring_memfd(config: &RingConfig, header: &RingHeader) -> Result<OwnedFd, RingError> {
    let fd = memfd_create(
        "ringside-ring",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(sys("memfd_create"))?;
    let len = i64::try_from(config.shm_len()).map_err(|_| sys("ftruncate")(nix::Error::EFBIG))?;
    ftruncate(&fd, len).map_err(sys("ftruncate"))?;
    let written = pwrite(&fd, header.as_bytes(), 0).map_err(sys("pwrite header"))?;
    if written != size_of::<RingHeader>() {
        return Err(RingError::Sys {
            op: "pwrite header",
            source: nix::Error::EIO,
        });
    }
    fcntl(
        &fd,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
        ),
    )
    .map_err(sys("seal ring"))?;
    Ok(fd)
}

/// Checks a ring fd against a geometry the caller trusts (the sidecar's Welcome): seals and
/// size only. The header is not consulted: it lives in memory every producer can write.
///
/// # Errors
///
/// [`RingError::Header`] for an invalid geometry, [`RingError::Seals`] when a seal is missing,
/// [`RingError::Size`] when the object's size differs, [`RingError::Sys`] when `fcntl` or
/// `fstat` fails.
pub fn inspect_ring_fd_geometry(fd: impl AsFd, config: &RingConfig) -> Result<(), RingError> {
    config
        .validate()
        .map_err(|e| RingError::Header(HeaderError::Config(e)))?;
    let seals = fcntl(&fd, FcntlArg::F_GET_SEALS).map_err(sys("F_GET_SEALS"))?;
    if seals & RING_SEALS != RING_SEALS {
        return Err(RingError::Seals {
            found: seals,
            required: RING_SEALS,
        });
    }
    let stat = fstat(&fd).map_err(sys("fstat"))?;
    let found = u64::try_from(stat.st_size).unwrap_or(0);
    if found != config.shm_len() {
        return Err(RingError::Size {
            found,
            expected: config.shm_len(),
        });
    }
    Ok(())
}

/// Checks a ring fd handed over by someone else: seals, size and header.
/// Returns the validated copy of the header.
///
/// # Errors
///
/// As [`inspect_ring_fd_geometry`], plus [`RingError::Header`] when the header copy fails
/// validation.
pub fn inspect_ring_fd(fd: impl AsFd) -> Result<(RingHeader, RingConfig), RingError> {
    let seals = fcntl(&fd, FcntlArg::F_GET_SEALS).map_err(sys("F_GET_SEALS"))?;
    if seals & RING_SEALS != RING_SEALS {
        return Err(RingError::Seals {
            found: seals,
            required: RING_SEALS,
        });
    }
    let mut bytes = [0u8; size_of::<RingHeader>()];
    let read = pread(&fd, &mut bytes, 0).map_err(sys("pread header"))?;
    let header = RingHeader::read_from_bytes(&bytes[..read]).map_err(|_| RingError::Size {
        found: read as u64,
        expected: size_of::<RingHeader>() as u64,
    })?;
    let config = header.validate()?;
    let stat = fstat(&fd).map_err(sys("fstat"))?;
    let found = u64::try_from(stat.st_size).unwrap_or(0);
    if found != config.shm_len() {
        return Err(RingError::Size {
            found,
            expected: config.shm_len(),
        });
    }
    Ok((header, config))
}

/// Access mode of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// PROT_READ only: the sidecar and readers.
    ReadOnly,
    /// PROT_READ | PROT_WRITE: producers.
    ReadWrite,
}

/// A ring mapped as: header page, then the data region twice, back to back, so that a
/// frame starting near the end continues into the second copy and never wraps.
#[derive(Debug)]
pub(crate) struct RingMapping {
    /// Start of the header page: `reservation` moved up to a huge-page boundary when the
    /// ring is large enough for huge pages (see [`HUGE_PAGE`]).
    base: NonNull<u8>,
    /// Header page plus the data region twice.
    total_len: usize,
    capacity: usize,
    access: Access,
    /// The whole address range reserved (and unmapped on drop): `total_len` bytes, plus
    /// the slack that aligned `base`.
    reservation: NonNull<u8>,
    reservation_len: usize,
}

/// The PMD huge page size of x86_64 and aarch64 with 4 KiB pages. A ring whose capacity is
/// a multiple of it is mapped at an address where each copy of the data region has the
/// same offset from a huge-page boundary as in the memfd, and advised `MADV_HUGEPAGE`: on
/// hosts that allow huge pages for shared memory (`shmem_enabled` set to `advise` in
/// `/sys/kernel/mm/transparent_hugepage/`), a streaming writer then misses the TLB once
/// per 2 MiB instead of once per 4 KiB. Elsewhere the advice does nothing.
const HUGE_PAGE: usize = 2 << 20;

// SAFETY: the mapping is plain shared memory addressed through a raw pointer; every access
// goes through methods that use atomics or raw copies, never references that assume
// exclusive ownership across threads. Unmapping happens only in Drop, after all borrows end.
unsafe impl Send for RingMapping {}
// SAFETY: as above: concurrent use from several threads is the design (many writers claim
// disjoint ranges through the atomic claim word), and no method hands out `&mut` that could
// alias another thread's.
unsafe impl Sync for RingMapping {}

impl RingMapping {
    /// Maps a ring fd that [`inspect_ring_fd`] accepted with `config`.
    pub fn map(
        fd: &OwnedFd,
        config: &RingConfig,
        access: Access,
    ) -> Result<RingMapping, RingError> {
        let capacity =
            usize::try_from(config.capacity).map_err(|_| sys("mmap")(nix::Error::EFBIG))?;
        let header_len = HEADER_REGION_LEN as usize;
        let total_len = header_len + 2 * capacity;
        let prot = match access {
            Access::ReadOnly => libc::PROT_READ,
            Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        };
        // Rings of at least one huge page get a huge-page-aligned base (see HUGE_PAGE):
        // reserve that much more and start inside it.
        let huge = capacity >= HUGE_PAGE && capacity % HUGE_PAGE == 0;
        let slack = if huge { HUGE_PAGE } else { 0 };
        let reservation_len = total_len
            .checked_add(slack)
            .ok_or_else(|| sys("mmap reserve")(nix::Error::EFBIG))?;
        // SAFETY: an anonymous PROT_NONE reservation at an address of the kernel's choosing
        // cannot alias any existing Rust object; we own the returned range until Drop.
        let reserved = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reservation_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if reserved == libc::MAP_FAILED {
            return Err(RingError::Sys {
                op: "mmap reserve",
                source: nix::Error::last(),
            });
        }
        let reservation = NonNull::new(reserved.cast::<u8>()).ok_or(RingError::Sys {
            op: "mmap reserve",
            source: nix::Error::EINVAL,
        })?;
        let skip = if huge {
            (HUGE_PAGE - reservation.as_ptr() as usize % HUGE_PAGE) % HUGE_PAGE
        } else {
            0
        };
        let mapping = RingMapping {
            // SAFETY: skip < slack, so base..base + total_len lies inside the reservation.
            base: unsafe { reservation.add(skip) },
            total_len,
            capacity,
            access,
            reservation,
            reservation_len,
        };
        let pieces = [
            (0usize, 0i64, header_len),
            (header_len, header_len as i64, capacity),
            (header_len + capacity, header_len as i64, capacity),
        ];
        for (offset, file_offset, len) in pieces {
            // SAFETY: `offset + len <= total_len`, so the target lies inside our own
            // reservation, which MAP_FIXED replaces atomically; no Rust reference points into
            // it yet. The fd's size was checked (inspect_ring_fd) to cover file_offset + len
            // and its shrink seal guarantees it stays so: no access can SIGBUS.
            let got = unsafe {
                libc::mmap(
                    mapping.base.as_ptr().add(offset).cast(),
                    len,
                    prot,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd.as_raw_fd(),
                    file_offset,
                )
            };
            if got == libc::MAP_FAILED {
                return Err(RingError::Sys {
                    op: "mmap ring",
                    source: nix::Error::last(),
                });
            }
        }
        if huge {
            // SAFETY: the range is the two data copies just mapped, inside our own
            // reservation; MADV_HUGEPAGE only changes how the kernel backs the pages
            // (never their contents), and fails harmlessly (EINVAL) where transparent huge
            // pages are not built in, so its result is ignored.
            unsafe {
                libc::madvise(
                    mapping.base.as_ptr().add(header_len).cast(),
                    2 * capacity,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
        Ok(mapping)
    }

    /// Backs the whole data region with memory now, through this mapping (the first copy;
    /// the second maps the same pages), and fills this process's page tables for it, so
    /// that no write or read of the ring takes a page fault later. Read-only (the sidecar
    /// creating a ring): the missing pages are allocated, zeroed and charged to this
    /// process's memory cgroup here, once, instead of in whichever producer first writes
    /// each of them, in the middle of its `send`. Read-write (a producer): its page table
    /// entries are made writable up front. On kernels without `MADV_POPULATE_READ` /
    /// `MADV_POPULATE_WRITE` (before 5.14) this does nothing and pages come on first touch,
    /// as before.
    ///
    /// # Errors
    ///
    /// [`RingError::Populate`] when the memory cannot be had (`ENOMEM` when the host has
    /// less free than the ring's capacity). In a memory cgroup too small for the ring the
    /// kernel's OOM killer acts instead, during this call.
    pub fn populate(&self) -> Result<(), RingError> {
        let advice = match self.access {
            Access::ReadOnly => libc::MADV_POPULATE_READ,
            Access::ReadWrite => libc::MADV_POPULATE_WRITE,
        };
        // SAFETY: the range is the first data copy, inside our own mapping and mapped with
        // the protection the advice needs (populating for write on a read-only mapping
        // would fail, never write); populating only faults pages in (allocating a shared
        // memory object's missing pages, zeroed) and never changes their contents.
        let rc = unsafe { libc::madvise(self.data().cast(), self.capacity, advice) };
        if rc == 0 {
            return Ok(());
        }
        match nix::Error::last() {
            nix::Error::EINVAL => Ok(()),
            source => Err(RingError::Populate {
                capacity: self.capacity as u64,
                source,
            }),
        }
    }

    #[inline]
    fn data(&self) -> *mut u8 {
        // SAFETY: the header region is HEADER_REGION_LEN bytes, inside the mapping.
        unsafe { self.base.as_ptr().add(HEADER_REGION_LEN as usize) }
    }

    /// Data pointer for `position`, with `len` bytes available behind it thanks to the
    /// double mapping. Panics only on internal misuse (len over capacity), never on ring data:
    /// callers bound `len` by the validated max frame length first.
    #[inline]
    fn at(&self, position: u64, len: usize) -> *mut u8 {
        assert!(
            len <= self.capacity,
            "ring access of {len} bytes exceeds capacity"
        );
        let offset = (position as usize) & (self.capacity - 1);
        // SAFETY: offset < capacity and len <= capacity, so [offset, offset + len) lies
        // within the two back-to-back data copies (2 * capacity bytes).
        unsafe { self.data().add(offset) }
    }

    /// The low half of the claim word (next byte position), for relaxed loads.
    pub fn claim_position(&self) -> &AtomicU64 {
        // SAFETY: CLAIM_OFFSET is 16-aligned inside the page-aligned header page. The
        // pointee lives as long as &self. On a read-only mapping only loads are issued (the
        // reader module never stores or RMWs through this), and std documents that
        // lock-free loads of up to 8 bytes are sound on read-only memory.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(CLAIM_OFFSET).cast()) }
    }

    /// The high half of the claim word (next frame sequence), for relaxed loads.
    pub fn claim_sequence(&self) -> &AtomicU64 {
        // SAFETY: as for claim_position; the high half of a little-endian u128 is the
        // 8-aligned word 8 bytes after it.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(CLAIM_OFFSET + 8).cast()) }
    }

    /// The whole 128-bit claim word. Writable mappings only: on x86_64 even a 128-bit load
    /// may be a locked cmpxchg16b, which faults on read-only pages.
    pub fn claim_word(&self) -> Option<&AtomicU128> {
        if self.access != Access::ReadWrite {
            return None;
        }
        // SAFETY: CLAIM_OFFSET is 16-aligned, the mapping is writable, and the word lives as
        // long as &self. Producers in other processes access it only atomically.
        Some(unsafe { AtomicU128::from_ptr(self.base.as_ptr().add(CLAIM_OFFSET).cast()) })
    }

    /// The commit word of the frame at `position` (8-aligned by the format).
    #[inline]
    pub fn commit_word(&self, position: u64) -> &AtomicU64 {
        // Positions come from the claim word, which a hostile producer can forge: round down
        // rather than assume alignment.
        let ptr = self.at(position & !7, 8);
        // SAFETY: 8-aligned (data region is page-aligned and position is rounded down to 8),
        // inside the mapping, valid for &self. On read-only mappings only relaxed loads are
        // used (see claim_position).
        unsafe { AtomicU64::from_ptr(ptr.cast()) }
    }

    /// Copies `dst.len()` bytes of the ring starting at `position` into `dst`.
    ///
    /// The bytes may be changing under us (other processes write the ring); the copy may be
    /// torn. Callers must re-check the claim counter afterwards and validate the copy.
    /// Inlined, so that a fixed-size copy (a frame header) compiles to a few moves instead
    /// of a `memcpy` call.
    #[inline]
    pub fn copy_out(&self, position: u64, dst: &mut [u8]) {
        let src = self.at(position, dst.len());
        // SAFETY: src..src+len is inside the mapping (see `at`), dst is a distinct local
        // buffer. Concurrent writes by other processes can make the copied bytes
        // inconsistent but cannot make the copy itself fault: the mapping is sealed against
        // shrinking, and the copy produces plain bytes, for which every value is valid.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) }
    }

    /// Appends `len` bytes of the ring starting at `position` to `dst`, copying straight into
    /// its spare capacity: no zero-fill of the destination first.
    ///
    /// Like [`copy_out`](Self::copy_out), the bytes may be changing under us and the copy
    /// may be torn: callers must re-check the claim counter afterwards and validate the
    /// appended bytes (never the ring) before using them.
    ///
    /// # Panics
    ///
    /// When `len` exceeds the capacity (internal misuse, never ring data: callers bound
    /// `len` by the validated max frame length), as [`copy_out`](Self::copy_out).
    #[inline(always)]
    pub fn append_out(&self, position: u64, len: usize, dst: &mut bytes::BytesMut) {
        let src = self.at(position, len);
        dst.reserve(len);
        let spare = dst.spare_capacity_mut();
        debug_assert!(spare.len() >= len, "reserve gave room for len bytes");
        let len = len.min(spare.len());
        // SAFETY: src..src+len is inside the mapping (see `at`); the destination is the
        // BytesMut's own spare capacity, at least `len` bytes after `reserve` (and `len`
        // is clamped to it), a distinct allocation. As in `copy_out`, concurrent writes by
        // other processes can only make the copied bytes inconsistent, never the copy
        // fault, and every byte value is a valid u8.
        unsafe { std::ptr::copy_nonoverlapping(src, spare.as_mut_ptr().cast::<u8>(), len) };
        let new_len = dst.len() + len;
        // SAFETY: the `len` bytes after the old length were initialised by the copy above.
        unsafe { dst.set_len(new_len) };
    }

    /// Asks the CPU to start loading the cache lines of `[position, position + len)` (a hint;
    /// no memory is read into the program). A producer issues it right after its claim, so
    /// that the ring lines it is about to overwrite (long out of cache in a large ring) arrive
    /// while it hashes the payload, instead of stalling the copy line by line.
    #[inline]
    pub fn prefetch(&self, position: u64, len: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let len = len.min(self.capacity);
            let start = self.at(position, len);
            let mut offset = 0;
            while offset < len {
                // SAFETY: prefetch is a hint that never faults and reads nothing into the
                // program; the address is inside the mapping anyway (see `at`).
                unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset).cast::<i8>()) };
                offset += 64;
            }
            // The last line, when the range does not start on a line boundary.
            // SAFETY: as above; start + len - 1 is the range's last byte.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(len.saturating_sub(1)).cast::<i8>())
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (position, len);
    }

    /// Copies `src` into the ring at `position`. Writable mappings only; the caller owns the
    /// range through a claim.
    ///
    /// # Panics
    ///
    /// When called on a read-only mapping, or with more bytes than the capacity: both are bugs
    /// of this crate, not of the ring's contents.
    #[inline]
    pub fn copy_in(&self, position: u64, src: &[u8]) {
        assert_eq!(
            self.access,
            Access::ReadWrite,
            "copy_in on a read-only ring"
        );
        let dst = self.at(position, src.len());
        // SAFETY: dst..dst+len is inside a writable mapping (see `at`); the claim protocol
        // gives this producer exclusive ownership of the range until it commits.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) }
    }

    /// Stores `words` (little-endian, as the format is) into the ring at `position`: a frame
    /// header written straight from registers, so no load has to read back bytes just
    /// stored piecewise on the stack (a failed store-to-load forward costs more than the
    /// whole header write). Writable mappings only; the caller owns the range through a
    /// claim. `position` need not be aligned (a hostile producer can misalign the claim
    /// word; the store is unaligned-safe).
    ///
    /// # Panics
    ///
    /// As [`RingMapping::copy_in`].
    #[inline]
    pub fn store_words<const N: usize>(&self, position: u64, words: [u64; N]) {
        assert_eq!(
            self.access,
            Access::ReadWrite,
            "store_words on a read-only ring"
        );
        let dst = self.at(position, N * 8);
        // SAFETY: dst..dst + 8N is inside a writable mapping (see `at`); the claim protocol
        // gives this producer exclusive ownership of the range until it commits;
        // write_unaligned needs no alignment. The crate is little-endian only (layout.rs), so
        // the words' native bytes are the format's bytes.
        unsafe { std::ptr::write_unaligned(dst.cast::<[u64; N]>(), words) }
    }

    /// A mutable view of `len` ring bytes at `position`, for a zero-copy reservation.
    ///
    /// # Safety
    /// The caller must own `[position, position + len)` through a claim and must not create
    /// another view of it; the view must not outlive the mapping.
    // Uniqueness of the returned view comes from the claim protocol, not from &mut self:
    // many threads write disjoint claimed ranges of one mapping at once.
    /// # Panics
    ///
    /// As [`RingMapping::copy_in`].
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub unsafe fn slice_mut(&self, position: u64, len: usize) -> &mut [u8] {
        assert_eq!(
            self.access,
            Access::ReadWrite,
            "slice_mut on a read-only ring"
        );
        let ptr = self.at(position, len);
        // SAFETY: in bounds (see `at`), writable, and exclusively claimed per the caller's
        // contract. Another process violating the protocol could write here concurrently;
        // that is outside this process's memory model and only garbles bytes, which the
        // frame check catches at the reader.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }
}

impl RingMapping {
    /// A shared view of `len` ring bytes at `position`, for reading back a reservation.
    ///
    /// # Safety
    /// The caller must own `[position, position + len)` through a claim, with no mutable
    /// view of it alive; the view must not outlive the mapping.
    #[inline]
    pub unsafe fn slice(&self, position: u64, len: usize) -> &[u8] {
        let ptr = self.at(position, len);
        // SAFETY: in bounds (see `at`) and, per the caller's contract, not mutated by this
        // process while the view lives.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

impl RingMapping {
    /// Replaces the whole mapping, in place, with private anonymous memory: the memfd is
    /// no longer referenced from here (its memory can be freed), while any thread still
    /// in the middle of a write keeps writing into valid, harmless, process-private pages.
    pub fn retire(&self) {
        // SAFETY: base/total_len is exactly our own reservation; MAP_FIXED replaces it
        // atomically with fresh anonymous pages of the same protection, so every address a
        // concurrent writer may touch stays mapped and writable. Values read from it are
        // plain bytes (zeros), valid for any type we read through raw pointers.
        let replaced = unsafe {
            libc::mmap(
                self.base.as_ptr().cast(),
                self.total_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        debug_assert_ne!(replaced, libc::MAP_FAILED);
    }
}

impl Drop for RingMapping {
    fn drop(&mut self) {
        // SAFETY: reservation/reservation_len describe exactly the range reserved in `map`
        // (the ring's pieces were mapped inside it); nothing borrows from it anymore
        // because every borrow is tied to &self.
        unsafe {
            libc::munmap(self.reservation.as_ptr().cast(), self.reservation_len);
        }
    }
}

/// Payloads at least this long are copied into the ring with streaming (non-temporal)
/// stores by [`copy_to_ring`]. Below it a plain copy wins: the `sfence` that must follow
/// streaming stores costs about as much as copying 2 KiB through the cache, and a small
/// frame's lines are cheap to bring in. Measured on the development VM (AMD EPYC, a 64 MiB
/// memfd mapping written at a line-aligned stride, plain `memcpy` against 16-byte streaming
/// stores + `sfence`): quiet, 4 KiB 375 against 237 ns and 64 B 15 against 100 ns; loaded
/// (load average 6–7), the two cross between 2 and 4 KiB (2 KiB: 291 against 342 ns).
pub const STREAMING_COPY_MIN: usize = 3 * 1024;

/// Copies `src` into `dst`, a range of the ring, and returns once every byte copied is
/// ordered before any later store of this thread: the caller may then publish with a
/// Release store (the commit word) as after a plain copy.
///
/// At [`STREAMING_COPY_MIN`] bytes and more (on x86_64), the 64-byte lines `dst` covers
/// whole are written with streaming stores (`movntdq`), which go to memory without first
/// reading each line into the cache (a ring far larger than the cache would otherwise cost
/// a read and a write of memory per line, and evict the caller's working set); the partial
/// lines at either end are copied plainly. Anything shorter, and other architectures, is a
/// plain copy.
///
/// # Panics
///
/// When `dst` and `src` differ in length, as `copy_from_slice` (internal misuse).
#[inline]
pub fn copy_to_ring(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_to_ring: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if src.len() >= STREAMING_COPY_MIN {
        stream_copy(dst, src);
        return;
    }
    dst.copy_from_slice(src);
}

/// The streaming half of [`copy_to_ring`]: plain head, streamed whole lines, plain tail,
/// then `sfence`. Needs only SSE2, which every x86_64 CPU has (no run-time detection).
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn stream_copy(dst: &mut [u8], src: &[u8]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
    const LINE: usize = 64;
    let len = dst.len().min(src.len());
    let head = (dst.as_ptr() as usize).wrapping_neg() % LINE;
    let head = head.min(len);
    let lines = (len - head) / LINE;
    let body_end = head + lines * LINE;
    dst[..head].copy_from_slice(&src[..head]);
    let body_dst = dst[head..body_end].as_mut_ptr();
    let body_src = src[head..body_end].as_ptr();
    for line in 0..lines {
        // SAFETY: line * 64 + 64 <= body_end - head, so both 64-byte ranges lie inside the
        // two slices' [head, body_end) parts, which are valid, distinct (a `&mut` and a
        // `&` cannot alias) and exclusively ours for writing (`&mut dst`). The loads are
        // unaligned loads; the destination is 64-byte aligned (`head` rounds it up to a
        // line), so every 16-byte streaming store meets movntdq's 16-byte alignment.
        unsafe {
            let s = body_src.add(line * LINE).cast::<__m128i>();
            let d = body_dst.add(line * LINE).cast::<__m128i>();
            let (a, b, c, e) = (
                _mm_loadu_si128(s),
                _mm_loadu_si128(s.add(1)),
                _mm_loadu_si128(s.add(2)),
                _mm_loadu_si128(s.add(3)),
            );
            _mm_stream_si128(d, a);
            _mm_stream_si128(d.add(1), b);
            _mm_stream_si128(d.add(2), c);
            _mm_stream_si128(d.add(3), e);
        }
    }
    dst[body_end..len].copy_from_slice(&src[body_end..len]);
    // Ordering: streaming stores are weakly ordered; without a fence a later ordinary store
    // (the frame's commit word, stored with Release) could become visible to a reader on
    // another core before these payload bytes, and the reader would validate a frame whose
    // bytes are still in flight (it would then fail the check and be counted lost, or worse,
    // read the previous lap's bytes). `sfence` orders every store before it, streaming ones
    // included, before every store after it; with it, the Release store that commits the
    // frame is seen only after the whole payload, exactly as after a plain copy. (Loads are
    // unaffected: the reader's Acquire load of the commit word pairs with that store as
    // before.) The claim that preceded this copy is a locked instruction, which streaming
    // stores do not pass either, so no byte lands before the claim.
    // SAFETY: sfence has no preconditions (SSE, baseline on x86_64).
    unsafe { _mm_sfence() };
}

/// Length of the doorbell page.
pub const DOORBELL_LEN: usize = 4096;

/// The sidecar's doorbell page: a memfd sealed so that, after the sidecar's own writable
/// mapping, nobody else can map it writable (F_SEAL_FUTURE_WRITE).
#[derive(Debug)]
pub(crate) struct DoorbellMapping {
    base: NonNull<u8>,
}

// SAFETY: a page of shared memory accessed only through atomics.
unsafe impl Send for DoorbellMapping {}
// SAFETY: as above.
unsafe impl Sync for DoorbellMapping {}

impl DoorbellMapping {
    /// Creates the doorbell memfd (sidecar side), maps it writable, then seals it.
    pub fn create() -> Result<(OwnedFd, DoorbellMapping), RingError> {
        let fd = memfd_create(
            "ringside-doorbell",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(sys("memfd_create doorbell"))?;
        ftruncate(&fd, DOORBELL_LEN as i64).map_err(sys("ftruncate doorbell"))?;
        let mapping = Self::map_fd(&fd, libc::PROT_READ | libc::PROT_WRITE)?;
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_FUTURE_WRITE
                    | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(sys("seal doorbell"))?;
        Ok((fd, mapping))
    }

    fn map_fd(fd: &OwnedFd, prot: i32) -> Result<DoorbellMapping, RingError> {
        // SAFETY: a fresh shared mapping of DOORBELL_LEN bytes at a kernel-chosen address;
        // the fd's size was set or checked to be DOORBELL_LEN and is sealed against
        // shrinking (or still private to us while we create it).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                DOORBELL_LEN,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(RingError::Sys {
                op: "mmap doorbell",
                source: nix::Error::last(),
            });
        }
        NonNull::new(ptr.cast::<u8>())
            .map(|base| DoorbellMapping { base })
            .ok_or(RingError::Sys {
                op: "mmap doorbell",
                source: nix::Error::EINVAL,
            })
    }

    /// The "reader is asleep, ring the eventfd" word.
    pub fn sleeping(&self) -> &AtomicU64 {
        // SAFETY: offset 0 of a page-aligned mapping of DOORBELL_LEN bytes, valid for &self.
        // Producers map it read-only and only load it (relaxed loads of 8 bytes are sound on
        // read-only memory); the sidecar, which maps it writable, stores to it.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().cast()) }
    }
}

impl Drop for DoorbellMapping {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in map_fd; no borrows outlive &self.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), DOORBELL_LEN);
        }
    }
}

/// A producer's view of the sidecar's doorbell, at one address and one fd number for the
/// producer's whole life: reconnecting remaps the page and re-points the fd in place, so
/// nothing a concurrent writer may be using is ever freed.
#[derive(Debug)]
pub(crate) struct DoorbellSlot {
    base: NonNull<u8>,
    event: OwnedFd,
}

// SAFETY: one page accessed only through an atomic load, plus an fd.
unsafe impl Send for DoorbellSlot {}
// SAFETY: as above.
unsafe impl Sync for DoorbellSlot {}

impl DoorbellSlot {
    /// A detached slot: a zero page (so `sleeping` reads 0) and a placeholder eventfd.
    pub fn new(placeholder_event: OwnedFd) -> Result<DoorbellSlot, RingError> {
        // SAFETY: a fresh anonymous read-only page at a kernel-chosen address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                DOORBELL_LEN,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(RingError::Sys {
                op: "mmap doorbell slot",
                source: nix::Error::last(),
            });
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(RingError::Sys {
            op: "mmap doorbell slot",
            source: nix::Error::EINVAL,
        })?;
        Ok(DoorbellSlot {
            base,
            event: placeholder_event,
        })
    }

    /// Points the slot at a sidecar's doorbell page (checked: sealed, one page) and eventfd.
    pub fn attach(&self, page_fd: &OwnedFd, event_fd: &OwnedFd) -> Result<(), RingError> {
        let required = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        let seals = fcntl(page_fd, FcntlArg::F_GET_SEALS).map_err(sys("F_GET_SEALS doorbell"))?;
        if seals & required != required {
            return Err(RingError::Seals {
                found: seals,
                required,
            });
        }
        let stat = fstat(page_fd).map_err(sys("fstat doorbell"))?;
        if stat.st_size != DOORBELL_LEN as i64 {
            return Err(RingError::Size {
                found: u64::try_from(stat.st_size).unwrap_or(0),
                expected: DOORBELL_LEN as u64,
            });
        }
        // SAFETY: replaces our own page in place (MAP_FIXED) with a read-only shared mapping
        // of a sealed one-page memfd: the address stays valid for concurrent loads.
        let mapped = unsafe {
            libc::mmap(
                self.base.as_ptr().cast(),
                DOORBELL_LEN,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_FIXED,
                page_fd.as_raw_fd(),
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            return Err(RingError::Sys {
                op: "mmap doorbell",
                source: nix::Error::last(),
            });
        }
        // SAFETY: dup3 atomically re-points our own fd number at the sidecar's eventfd; the
        // OwnedFd keeps owning that number, and concurrent writers see either file.
        let duped = unsafe {
            libc::dup3(
                event_fd.as_raw_fd(),
                self.event.as_raw_fd(),
                libc::O_CLOEXEC,
            )
        };
        if duped < 0 {
            return Err(RingError::Sys {
                op: "dup3 eventfd",
                source: nix::Error::last(),
            });
        }
        Ok(())
    }

    /// Detaches from a sidecar that went away: `sleeping` reads 0 again, so nobody rings.
    pub fn detach(&self) {
        // SAFETY: replaces our own page in place with an anonymous zero page.
        let replaced = unsafe {
            libc::mmap(
                self.base.as_ptr().cast(),
                DOORBELL_LEN,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        debug_assert_ne!(replaced, libc::MAP_FAILED);
    }

    /// The sidecar's "asleep, ring me" word.
    pub fn sleeping(&self) -> &AtomicU64 {
        // SAFETY: offset 0 of our page-aligned page, valid for &self (the page is only ever
        // replaced in place, never unmapped before Drop); read-only, loads only.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().cast()) }
    }

    /// The eventfd to write to.
    pub fn event(&self) -> BorrowedFd<'_> {
        self.event.as_fd()
    }
}

impl Drop for DoorbellSlot {
    fn drop(&mut self) {
        // SAFETY: exactly the page mapped in `new` (possibly replaced in place since).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), DOORBELL_LEN);
        }
    }
}

/// Takes ownership of file descriptors that arrived in an SCM_RIGHTS message.
pub(crate) fn adopt_received_fds(raw: &[RawFd]) -> Vec<OwnedFd> {
    raw.iter()
        .filter(|fd| **fd >= 0)
        // SAFETY: the kernel just installed these descriptors in our table for this message
        // (recvmsg with SCM_RIGHTS); nothing else in the process knows them, so each is
        // owned exactly once here and closed when its OwnedFd drops.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) })
        .collect()
}

/// Why a ring's shared memory object was refused.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The header failed validation.
    #[error("ring refused: {0}")]
    Header(#[from] HeaderError),
    /// Seals missing: the ring could be truncated under a reader (SIGBUS).
    #[error(
        "ring refused: the memfd seals are {found:#x}, but shrink, grow and seal must all be sealed ({required:#x}); only rings created by ringside serve are accepted"
    )]
    Seals {
        /// Seals present.
        found: i32,
        /// Seals required.
        required: i32,
    },
    /// Object size differs from what the header implies.
    #[error("ring refused: the memfd is {found} bytes but its header implies {expected} bytes")]
    Size {
        /// Size from fstat.
        found: u64,
        /// Size the header implies.
        expected: u64,
    },
    /// This CPU cannot do the lock-free 128-bit atomics the claim needs.
    #[error(
        "this CPU has no lock-free 128-bit compare-and-swap (x86_64 cmpxchg16b / aarch64 LSE); ringside producers cannot run here"
    )]
    NoWideAtomics,
    /// The ring's memory could not be had when it was created.
    #[error(
        "could not back the {capacity}-byte ring with memory ({source}): the host has less free than that; lower --ring-size or free memory"
    )]
    Populate {
        /// The ring's data capacity in bytes.
        capacity: u64,
        /// The OS error (`ENOMEM`, or `EFAULT`/`EHWPOISON` for memory the kernel could not hand out).
        source: nix::Error,
    },
    /// A system call failed.
    #[error("ring {op} failed: {source}")]
    Sys {
        /// What was attempted.
        op: &'static str,
        /// The OS error.
        source: nix::Error,
    },
}
