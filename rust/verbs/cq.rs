//! Completion queues and how they are waited on.
//!
//! Completions are busy-polled (`ibv_poll_cq` through the context's ops table) with a
//! bounded back-off, not waited for on a completion channel: see "Verbs" in
//! `docs/decisions.md`. Every wait has a deadline.

use std::os::raw::c_int;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::device::{Context, ContextInner};
use super::error::{from_ret, last_os_error, VerbsError, VerbsResult};
use super::ffi::{self, IbvCq, IbvWc, PollCqFn};

pub(crate) struct CqInner {
    pub(crate) ctx: Arc<ContextInner>,
    pub(crate) ptr: NonNull<IbvCq>,
    poll: PollCqFn,
}

// SAFETY: ibv_poll_cq and ibv_destroy_cq may be called from any thread; providers lock the
// CQ internally (a CQ shared by several pollers is allowed by verbs).
unsafe impl Send for CqInner {}
// SAFETY: as above.
unsafe impl Sync for CqInner {}

impl Drop for CqInner {
    fn drop(&mut self) {
        // SAFETY: created by ibv_create_cq, destroyed once; QPs that use it hold an Arc of
        // this inner, so they are destroyed already (otherwise EBUSY).
        unsafe { (self.ctx.lib.fns().destroy_cq)(self.ptr.as_ptr()) };
    }
}

/// A completion queue (`struct ibv_cq`). Cheap to clone; keeps its device open.
#[derive(Clone)]
pub struct CompletionQueue {
    pub(crate) inner: Arc<CqInner>,
}

impl std::fmt::Debug for CompletionQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionQueue").finish_non_exhaustive()
    }
}

/// One work completion, copied out of `struct ibv_wc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The id given when the work request was posted.
    pub wr_id: u64,
    /// `IBV_WC_SUCCESS` (0) or an error status.
    pub status: u32,
    /// `enum ibv_wc_opcode` (valid only on success).
    pub opcode: u32,
    /// Bytes received (receives only).
    pub byte_len: u32,
    /// The immediate value, in host order, when the completion carries one.
    pub imm: Option<u32>,
    /// Local queue pair number.
    pub qp_num: u32,
    /// Provider-specific error detail.
    pub vendor_err: u32,
}

impl Completion {
    fn from_wc(wc: &IbvWc) -> Completion {
        let imm = (wc.wc_flags & ffi::IBV_WC_WITH_IMM != 0).then(|| u32::from_be(wc.imm_data));
        Completion {
            wr_id: wc.wr_id,
            status: wc.status,
            opcode: wc.opcode,
            byte_len: wc.byte_len,
            imm,
            qp_num: wc.qp_num,
            vendor_err: wc.vendor_err,
        }
    }

    /// Whether the work request succeeded.
    pub fn is_ok(&self) -> bool {
        self.status == ffi::IBV_WC_SUCCESS
    }

    /// Whether it is the receive side of an RDMA WRITE with immediate.
    pub fn is_write_with_imm(&self) -> bool {
        self.is_ok() && self.opcode == ffi::IBV_WC_RECV_RDMA_WITH_IMM
    }
}

impl Context {
    /// `ibv_create_cq` with room for `entries` completions (no completion channel: polled).
    ///
    /// # Errors
    /// [`VerbsError::CreateCq`], or [`VerbsError::Invalid`] when the provider has no
    /// `poll_cq`.
    pub fn create_cq(&self, entries: u32) -> VerbsResult<CompletionQueue> {
        let ctx = self.inner.ptr.as_ptr();
        // SAFETY: an open context; `ops` is filled by the provider when it is opened and
        // never changes afterwards.
        let poll = unsafe { (*ctx).ops.poll_cq }
            .ok_or_else(|| VerbsError::Invalid("the provider has no poll_cq".into()))?;
        let n = c_int::try_from(entries).unwrap_or(c_int::MAX);
        let fns = self.inner.lib.fns();
        // SAFETY: an open context; no user context, no channel, completion vector 0.
        let cq = unsafe { (fns.create_cq)(ctx, n, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        let ptr = NonNull::new(cq)
            .ok_or_else(|| VerbsError::CreateCq { entries, source: last_os_error() })?;
        Ok(CompletionQueue { inner: Arc::new(CqInner { ctx: Arc::clone(&self.inner), ptr, poll }) })
    }
}

impl CompletionQueue {
    /// Takes up to `max` completions off the queue without waiting, appending them to `out`;
    /// returns how many were taken.
    ///
    /// # Errors
    /// [`VerbsError::PollCq`] when the provider reports an error.
    pub fn poll(&self, out: &mut Vec<Completion>, max: usize) -> VerbsResult<usize> {
        let mut wcs = [IbvWc::default(); 16];
        let want = max.min(wcs.len());
        if want == 0 {
            return Ok(0);
        }
        // SAFETY: a live CQ and room for `want` (<= 16) ibv_wc entries.
        let n =
            unsafe { (self.inner.poll)(self.inner.ptr.as_ptr(), want as c_int, wcs.as_mut_ptr()) };
        let Ok(n) = usize::try_from(n) else { return Err(VerbsError::PollCq(from_ret(n))) };
        out.extend(wcs[..n.min(want)].iter().map(Completion::from_wc));
        Ok(n)
    }

    /// Polls until `want` completions have arrived or `timeout` passes, backing off as in
    /// [`Backoff`]. Completions with an error status are returned like the others; see
    /// [`CompletionQueue::check`].
    ///
    /// # Errors
    /// [`VerbsError::Timeout`] (the completions that did arrive are lost to the caller, so
    /// the connection should be torn down), or [`VerbsError::PollCq`].
    pub fn wait(&self, want: usize, timeout: Duration) -> VerbsResult<Vec<Completion>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(want);
        let mut backoff = Backoff::default();
        while out.len() < want {
            let missing = want - out.len();
            if self.poll(&mut out, missing)? > 0 {
                backoff = Backoff::default();
                continue;
            }
            if Instant::now() >= deadline {
                return Err(VerbsError::Timeout(timeout));
            }
            backoff.pause();
        }
        Ok(out)
    }

    /// The completion itself when it succeeded, else [`VerbsError::Completion`] with the
    /// library's name for its status.
    ///
    /// # Errors
    /// [`VerbsError::Completion`].
    pub fn check(&self, c: Completion) -> VerbsResult<Completion> {
        if c.is_ok() {
            return Ok(c);
        }
        Err(VerbsError::Completion {
            wr_id: c.wr_id,
            status: self.inner.ctx.lib.status_str(c.status),
            code: c.status,
            vendor_err: c.vendor_err,
        })
    }
}

/// What a poller does between empty polls: spin (a completion usually arrives within a
/// few microseconds of a busy NIC), then yield the CPU, then sleep for doubling periods up
/// to [`Backoff::MAX_SLEEP`], so an idle connection costs little CPU.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    step: u32,
}

/// One pause of a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// A CPU spin-loop hint.
    Spin,
    /// `thread::yield_now`.
    Yield,
    /// `thread::sleep` for this long.
    Sleep(Duration),
}

impl Backoff {
    /// Empty polls answered by spinning.
    pub const SPINS: u32 = 256;
    /// Then by yielding.
    pub const YIELDS: u32 = 64;
    /// The first sleep.
    pub const MIN_SLEEP: Duration = Duration::from_micros(20);
    /// The longest sleep: the worst added latency once a connection has gone idle.
    pub const MAX_SLEEP: Duration = Duration::from_millis(1);

    /// The next pause (and advances).
    pub fn next_pause(&mut self) -> Pause {
        let step = self.step;
        self.step = self.step.saturating_add(1);
        if step < Self::SPINS {
            return Pause::Spin;
        }
        if step < Self::SPINS + Self::YIELDS {
            return Pause::Yield;
        }
        let doublings = (step - Self::SPINS - Self::YIELDS).min(16);
        Pause::Sleep(Self::MIN_SLEEP.saturating_mul(1 << doublings).min(Self::MAX_SLEEP))
    }

    /// Takes the next pause.
    pub fn pause(&mut self) {
        match self.next_pause() {
            Pause::Spin => std::hint::spin_loop(),
            Pause::Yield => std::thread::yield_now(),
            Pause::Sleep(d) => std::thread::sleep(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_spins_then_yields_then_sleeps_up_to_a_cap() {
        let mut b = Backoff::default();
        let pauses: Vec<Pause> = (0..400).map(|_| b.next_pause()).collect();
        assert!(pauses[..256].iter().all(|p| *p == Pause::Spin));
        assert!(pauses[256..320].iter().all(|p| *p == Pause::Yield));
        assert_eq!(pauses[320], Pause::Sleep(Backoff::MIN_SLEEP));
        assert_eq!(pauses[321], Pause::Sleep(Backoff::MIN_SLEEP * 2));
        assert_eq!(pauses[399], Pause::Sleep(Backoff::MAX_SLEEP));
        let mut long = Backoff { step: u32::MAX - 1 };
        assert_eq!(long.next_pause(), Pause::Sleep(Backoff::MAX_SLEEP));
        assert_eq!(long.next_pause(), Pause::Sleep(Backoff::MAX_SLEEP), "saturates");
    }

    #[test]
    fn completions_decode_immediates_in_host_order() {
        let wc = IbvWc {
            wr_id: 5,
            opcode: ffi::IBV_WC_RECV_RDMA_WITH_IMM,
            wc_flags: ffi::IBV_WC_WITH_IMM,
            imm_data: 0x1234_5678u32.to_be(),
            ..IbvWc::default()
        };
        let c = Completion::from_wc(&wc);
        assert_eq!((c.wr_id, c.imm), (5, Some(0x1234_5678)));
        assert!(c.is_ok() && c.is_write_with_imm());
        let plain = Completion::from_wc(&IbvWc { opcode: ffi::IBV_WC_RDMA_WRITE, ..wc });
        assert!(!plain.is_write_with_imm());
        let failed = Completion::from_wc(&IbvWc { status: 12, wc_flags: 0, ..wc });
        assert!(!failed.is_ok() && failed.imm.is_none());
    }
}
