//! Reliable-connected queue pairs: created in RESET ([`PreparedQp`], whose [`Endpoint`] goes
//! into the handshake), then moved INIT -> RTR -> RTS against the peer's endpoint
//! ([`ConnectedQp`]), which posts RDMA WRITE with immediate and receives.

use std::os::raw::c_int;
use std::ptr::NonNull;
use std::sync::Arc;

use super::attrs::{self, random_psn, LocalPort, Role, Transition};
use super::cq::{CompletionQueue, CqInner};
use super::device::{PdInner, ProtectionDomain};
use super::error::{from_ret, last_os_error, VerbsError, VerbsResult};
use super::exchange::Endpoint;
use super::ffi::{self, IbvQp, IbvQpCap, IbvQpInitAttr, IbvRdmaWr, IbvRecvWr, IbvSendWr, IbvSge};
use super::ffi::{PostRecvFn, PostSendFn};
use super::mr::Sge;

/// Queue depths and scatter/gather sizes of a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpCaps {
    /// Sends that may be outstanding (the sidecar: its in-flight limit per connection).
    pub max_send_wr: u32,
    /// Receives that may be posted (the client: its in-flight limit per connection).
    pub max_recv_wr: u32,
    /// Scatter/gather entries per send (staging slabs one write may gather).
    pub max_send_sge: u32,
}

impl Default for QpCaps {
    fn default() -> QpCaps {
        QpCaps { max_send_wr: 256, max_recv_wr: 256, max_send_sge: 4 }
    }
}

pub(crate) struct QpInner {
    ptr: NonNull<IbvQp>,
    post_send: PostSendFn,
    post_recv: PostRecvFn,
    // Parents after the QP pointer: they are dropped after `Drop::drop` destroyed the QP,
    // so teardown runs QP -> CQs -> PD -> device, whatever order the handles go in.
    pd: Arc<PdInner>,
    _send_cq: Arc<CqInner>,
    _recv_cq: Arc<CqInner>,
}

// SAFETY: posting to one QP from several threads is allowed by verbs (providers lock the
// send and receive queues); the pointer is freed only in Drop.
unsafe impl Send for QpInner {}
// SAFETY: as above.
unsafe impl Sync for QpInner {}

impl Drop for QpInner {
    fn drop(&mut self) {
        // SAFETY: created by ibv_create_qp, destroyed once.
        unsafe { (self.pd.ctx.lib.fns().destroy_qp)(self.ptr.as_ptr()) };
    }
}

impl QpInner {
    fn qpn(&self) -> u32 {
        // SAFETY: the QP struct stays allocated until destroy; qp_num never changes.
        unsafe { (*self.ptr.as_ptr()).qp_num }
    }

    fn modify(&self, mut t: Transition) -> VerbsResult<()> {
        let fns = self.pd.ctx.lib.fns();
        // SAFETY: a live QP and a complete ibv_qp_attr whose masked fields are set.
        let rc = unsafe { (fns.modify_qp)(self.ptr.as_ptr(), &mut t.attr, t.mask) };
        if rc != 0 {
            return Err(VerbsError::ModifyQp { state: t.state, source: from_ret(rc) });
        }
        Ok(())
    }
}

/// A queue pair in RESET: its [`Endpoint`] goes to the peer, then [`PreparedQp::connect`].
pub struct PreparedQp {
    inner: Arc<QpInner>,
    local: LocalPort,
    psn: u32,
    role: Role,
}

impl std::fmt::Debug for PreparedQp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedQp").field("qpn", &self.inner.qpn()).finish()
    }
}

impl ProtectionDomain {
    /// `ibv_create_qp`: an RC queue pair on `local`'s port, completing sends on `send_cq`
    /// and receives on `recv_cq`. Sends are signaled only when asked (`sq_sig_all = 0`).
    ///
    /// # Errors
    /// [`VerbsError::CreateQp`], or [`VerbsError::Invalid`] when the provider lacks the
    /// post operations.
    pub fn create_qp(
        &self,
        send_cq: &CompletionQueue,
        recv_cq: &CompletionQueue,
        caps: QpCaps,
        local: LocalPort,
        role: Role,
    ) -> VerbsResult<PreparedQp> {
        let ctx = self.inner.ctx.ptr.as_ptr();
        // SAFETY: an open context; its ops table is fixed once opened.
        let (post_send, post_recv) = unsafe { ((*ctx).ops.post_send, (*ctx).ops.post_recv) };
        let (Some(post_send), Some(post_recv)) = (post_send, post_recv) else {
            return Err(VerbsError::Invalid("the provider has no post_send/post_recv".into()));
        };
        let mut init = IbvQpInitAttr {
            qp_context: std::ptr::null_mut(),
            send_cq: send_cq.inner.ptr.as_ptr(),
            recv_cq: recv_cq.inner.ptr.as_ptr(),
            srq: std::ptr::null_mut(),
            cap: IbvQpCap {
                max_send_wr: caps.max_send_wr,
                max_recv_wr: caps.max_recv_wr,
                max_send_sge: caps.max_send_sge,
                // Receives carry no data: WRITE_WITH_IMM places bytes by address.
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            qp_type: ffi::IBV_QPT_RC,
            sq_sig_all: 0,
        };
        let fns = self.inner.ctx.lib.fns();
        // SAFETY: a live PD, CQs of the same device, and a complete init attr.
        let qp = unsafe { (fns.create_qp)(self.inner.ptr.as_ptr(), &mut init) };
        let ptr = NonNull::new(qp).ok_or_else(|| VerbsError::CreateQp(last_os_error()))?;
        let inner = Arc::new(QpInner {
            ptr,
            post_send,
            post_recv,
            pd: Arc::clone(&self.inner),
            _send_cq: Arc::clone(&send_cq.inner),
            _recv_cq: Arc::clone(&recv_cq.inner),
        });
        Ok(PreparedQp { inner, local, psn: random_psn(), role })
    }
}

impl PreparedQp {
    /// What the peer needs to connect to this queue pair.
    pub fn endpoint(&self) -> Endpoint {
        self.local.endpoint(self.inner.qpn(), self.psn)
    }

    /// Moves the queue pair INIT -> RTR -> RTS against `remote`.
    ///
    /// # Errors
    /// [`VerbsError::Invalid`] when the endpoints cannot reach each other (see
    /// `attrs::to_rtr`), [`VerbsError::ModifyQp`] naming the step that failed.
    pub fn connect(self, remote: &Endpoint) -> VerbsResult<ConnectedQp> {
        let rtr = attrs::to_rtr(&self.local, remote)?;
        self.inner.modify(attrs::to_init(self.local.port_num, self.role))?;
        self.inner.modify(rtr)?;
        self.inner.modify(attrs::to_rts(self.psn))?;
        Ok(ConnectedQp { inner: self.inner, remote: *remote })
    }
}

/// A queue pair in RTS. Cheap to clone; posting is allowed from any thread.
#[derive(Clone)]
pub struct ConnectedQp {
    inner: Arc<QpInner>,
    remote: Endpoint,
}

impl std::fmt::Debug for ConnectedQp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectedQp")
            .field("qpn", &self.inner.qpn())
            .field("remote_qpn", &self.remote.qpn)
            .finish()
    }
}

impl ConnectedQp {
    /// This queue pair's number.
    pub fn qpn(&self) -> u32 {
        self.inner.qpn()
    }

    /// The peer it is connected to.
    pub fn remote(&self) -> &Endpoint {
        &self.remote
    }

    /// Posts one RDMA WRITE with immediate: the bytes of `local` (gathered in order) go to
    /// `remote_addr` under `rkey`, and the peer gets a receive completion carrying `imm`.
    /// With `signaled`, a completion with `wr_id` follows on the send CQ.
    ///
    /// The NIC reads `local` after this returns: leave those bytes alone until the send's
    /// completion (or a later signaled one on this QP) has been polled.
    ///
    /// # Errors
    /// [`VerbsError::PostSend`] (ENOMEM: the send queue is full), [`VerbsError::Invalid`]
    /// for more SGEs than fit a C int.
    pub fn post_write_with_imm(
        &self,
        wr_id: u64,
        local: &[Sge],
        remote_addr: u64,
        rkey: u32,
        imm: u32,
        signaled: bool,
    ) -> VerbsResult<()> {
        let op = (ffi::IBV_WR_RDMA_WRITE_WITH_IMM, imm.to_be());
        self.post_write_op(wr_id, local, remote_addr, rkey, op, signaled)
    }

    /// Posts one plain RDMA WRITE (no immediate, so the peer sees no completion): for the
    /// leading parts of a transfer that needs more SGEs than one work request holds, whose
    /// last part then goes with [`ConnectedQp::post_write_with_imm`]. An RC queue pair
    /// executes its sends in order, so the peer's completion for that last part also means
    /// these bytes have landed.
    ///
    /// The NIC reads `local` after this returns, as for `post_write_with_imm`.
    ///
    /// # Errors
    /// As [`ConnectedQp::post_write_with_imm`].
    pub fn post_write(
        &self,
        wr_id: u64,
        local: &[Sge],
        remote_addr: u64,
        rkey: u32,
        signaled: bool,
    ) -> VerbsResult<()> {
        self.post_write_op(wr_id, local, remote_addr, rkey, (ffi::IBV_WR_RDMA_WRITE, 0), signaled)
    }

    /// One RDMA write work request; `op` is the opcode and its immediate (network order).
    fn post_write_op(
        &self,
        wr_id: u64,
        local: &[Sge],
        remote_addr: u64,
        rkey: u32,
        (opcode, imm_data): (std::os::raw::c_uint, u32),
        signaled: bool,
    ) -> VerbsResult<()> {
        let mut sges: Vec<IbvSge> = local.iter().map(|s| s.0).collect();
        let num_sge = c_int::try_from(sges.len())
            .map_err(|_| VerbsError::Invalid("too many scatter/gather entries".into()))?;
        let mut wr = IbvSendWr {
            wr_id,
            next: std::ptr::null_mut(),
            sg_list: if sges.is_empty() { std::ptr::null_mut() } else { sges.as_mut_ptr() },
            num_sge,
            opcode,
            send_flags: if signaled { ffi::IBV_SEND_SIGNALED } else { 0 },
            imm_data,
            wr: IbvRdmaWr::new(remote_addr, rkey),
            xrc_remote_srqn: 0,
            _bind_mw_tso: [0; 6],
        };
        let mut bad: *mut IbvSendWr = std::ptr::null_mut();
        // SAFETY: a live QP; `wr` and `sges` outlive the call (the provider copies them into
        // its queue before returning). The memory the SGEs name is the NIC's to read, under
        // their lkeys, which the NIC checks.
        let rc = unsafe { (self.inner.post_send)(self.inner.ptr.as_ptr(), &mut wr, &mut bad) };
        if rc != 0 {
            return Err(VerbsError::PostSend(from_ret(rc)));
        }
        Ok(())
    }

    /// Posts one receive without buffers: it is consumed by a WRITE with immediate, whose
    /// bytes land by address. Keep at least as many posted as writes may arrive.
    ///
    /// # Errors
    /// [`VerbsError::PostRecv`] (ENOMEM: the receive queue is full).
    pub fn post_recv(&self, wr_id: u64) -> VerbsResult<()> {
        let mut wr = IbvRecvWr {
            wr_id,
            next: std::ptr::null_mut(),
            sg_list: std::ptr::null_mut(),
            num_sge: 0,
        };
        let mut bad: *mut IbvRecvWr = std::ptr::null_mut();
        // SAFETY: a live QP and a complete receive request without SGEs.
        let rc = unsafe { (self.inner.post_recv)(self.inner.ptr.as_ptr(), &mut wr, &mut bad) };
        if rc != 0 {
            return Err(VerbsError::PostRecv(from_ret(rc)));
        }
        Ok(())
    }
}
