//! How the bytes of an OK answer reach the client, behind a seam that needs no device.
//!
//! Every connection gets a [`Pusher`] from its handshake: [`TcpPusher`] hands the staging
//! lease back so the writer sends it in the DATA frame; [`VerbsPusher`] checks the READ's
//! destination against the pool the client registered (`RemotePool::dest`) and has a
//! [`RemoteWriter`] RDMA-write the bytes there, after which the DATA frame carries only the
//! status. The bounds rule lives here, not in the device code, so it is tested everywhere
//! with a writer that only records what it was asked to write (`Recorder`, in tests).
//!
//! A [`VerbsBackend`] makes the verbs side of a connection from the client's
//! `VERBS_CLIENT`: the real one (`rdma.rs`) creates and connects a queue pair; tests plug in
//! a fake one, so a whole verbs-mode connection runs on hosts without RDMA.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::staging::Lease;
use super::stats::Transport;
use crate::proto::{DataHeader, Status};
use crate::verbs::{ClientExchange, Endpoint, RemotePool};

/// A boxed future, so the traits below stay object-safe.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a READ asked its bytes to go (`dest_slot`, `dest_offset`; verbs only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dest {
    pub(crate) slot: u32,
    pub(crate) offset: u32,
}

/// Why bytes were not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PushError {
    /// Answer this status instead; nothing was written and the connection goes on.
    Refused(Status),
    /// The transport failed (a write or its completion): close the connection, so the
    /// client falls back for what is outstanding.
    Fatal(String),
}

/// Delivers the bytes of OK answers on one connection.
pub(crate) trait Pusher: Send + Sync + std::fmt::Debug {
    /// The transport, for the stats.
    fn transport(&self) -> Transport;

    /// A check made before the needle is read, so a READ that can never be delivered costs
    /// no I/O. `Err` is the status to answer.
    fn check(&self, dest: Dest) -> Result<(), Status>;

    /// Delivers `lease`, the bytes of READ `request_id`'s OK answer, to `dest`. Returns what
    /// the DATA frame carries after its header: the bytes themselves (tcp) or nothing,
    /// because they are in the client's memory by now (verbs).
    fn push(&self, request_id: u32, dest: Dest, lease: Lease) -> BoxFuture<'_, PushResult>;
}

/// What [`Pusher::push`] comes to.
pub(crate) type PushResult = Result<Option<Lease>, PushError>;

/// Writes bytes into a client's registered memory.
pub(crate) trait RemoteWriter: Send + Sync + std::fmt::Debug {
    /// Writes all of `lease` at `addr` under `rkey`; the client's completion carries `imm`.
    /// Resolves once the NIC is done with the lease (its send completion was polled). The
    /// destination has been bounds-checked by the caller.
    fn write(&self, addr: u64, rkey: u32, imm: u32, lease: Lease) -> BoxFuture<'_, WriteResult>;
}

/// What [`RemoteWriter::write`] comes to.
pub(crate) type WriteResult = Result<(), PushError>;

/// Makes the verbs side of a connection.
pub(crate) trait VerbsBackend: Send + Sync + std::fmt::Debug {
    /// The device's name, for logs and stats.
    fn device(&self) -> &str;

    /// Creates this side's queue pair for a client that sent `ex`, connects it to the
    /// client's, and returns this side's endpoint (sent after `HELLO_ACK`) and the pusher
    /// for the connection. `max_inflight` is what the handshake grants. May block (queue
    /// pair transitions are system calls): run it on a blocking thread.
    ///
    /// # Errors
    /// A message saying why; the connection then goes on over tcp if the client offered it.
    fn accept(
        &self,
        ex: &ClientExchange,
        max_inflight: u32,
    ) -> Result<(Endpoint, Arc<dyn Pusher>), String>;
}

/// Bytes go in the DATA frame.
#[derive(Debug, Default)]
pub(crate) struct TcpPusher;

impl Pusher for TcpPusher {
    fn transport(&self) -> Transport {
        Transport::Tcp
    }

    fn check(&self, _dest: Dest) -> Result<(), Status> {
        // Over tcp the destination is echoed and otherwise unused.
        Ok(())
    }

    fn push(&self, _request_id: u32, _dest: Dest, lease: Lease) -> BoxFuture<'_, PushResult> {
        Box::pin(std::future::ready(Ok(Some(lease))))
    }
}

/// Bytes are RDMA-written into the slot the READ names, within what the client registered.
#[derive(Debug)]
pub(crate) struct VerbsPusher {
    pool: RemotePool,
    writer: Arc<dyn RemoteWriter>,
}

impl VerbsPusher {
    /// Writes with `writer` into `pool` (as the client announced it; already validated by
    /// `ClientExchange::decode`).
    pub(crate) fn new(pool: RemotePool, writer: Arc<dyn RemoteWriter>) -> VerbsPusher {
        VerbsPusher { pool, writer }
    }
}

impl Pusher for VerbsPusher {
    fn transport(&self) -> Transport {
        Transport::Verbs
    }

    fn check(&self, dest: Dest) -> Result<(), Status> {
        // Zero bytes fit anywhere in an existing slot, so this refuses exactly the slots
        // and offsets that no answer could be written to.
        self.pool.dest(dest.slot, dest.offset, 0).map(drop).map_err(|_| Status::BadRequest)
    }

    fn push(&self, request_id: u32, dest: Dest, lease: Lease) -> BoxFuture<'_, PushResult> {
        // The length checked is what is about to be written: the clamped range, or for WHOLE
        // the needle's size, so a client's slot bounds every write whatever it asked for.
        let addr = match self.pool.dest(dest.slot, dest.offset, lease.len() as u64) {
            Ok(addr) => addr,
            Err(_) => {
                return Box::pin(std::future::ready(Err(PushError::Refused(Status::BadRequest))))
            }
        };
        if lease.is_empty() {
            // Nothing to write, and so no receive completion for the client to wait for.
            return Box::pin(std::future::ready(Ok(None)));
        }
        let rkey = self.pool.rkey;
        Box::pin(async move {
            self.writer.write(addr, rkey, request_id, lease).await?;
            Ok(None)
        })
    }
}

/// The DATA header and payload for `header`/`payload` of an answer once delivered: an OK
/// answer's bytes go through `pusher`; any other answer has none to deliver.
///
/// # Errors
/// The reason when the transport failed and the connection must close.
pub(crate) async fn deliver(
    pusher: &dyn Pusher,
    request_id: u32,
    dest: Dest,
    header: DataHeader,
    payload: Option<Lease>,
) -> Result<(DataHeader, Option<Lease>), String> {
    let Some(lease) = payload.filter(|_| header.status == Status::Ok) else {
        return Ok((header, None));
    };
    match pusher.push(request_id, dest, lease).await {
        Ok(payload) => Ok((header, payload)),
        Err(PushError::Refused(status)) => Ok((DataHeader::error(status), None)),
        Err(PushError::Fatal(reason)) => Err(reason),
    }
}

#[cfg(test)]
pub(crate) use recorder::Recorder;

#[cfg(test)]
mod recorder {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, PoisonError};

    use super::*;

    /// One write a [`Recorder`] was asked for.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Write {
        pub(crate) addr: u64,
        pub(crate) rkey: u32,
        pub(crate) imm: u32,
        pub(crate) bytes: Vec<u8>,
    }

    /// A [`RemoteWriter`] that records what it would write where (and can be told to fail).
    #[derive(Debug, Default)]
    pub(crate) struct Recorder {
        writes: Mutex<Vec<Write>>,
        fail_next: AtomicBool,
    }

    impl Recorder {
        /// Everything written so far.
        pub(crate) fn writes(&self) -> Vec<Write> {
            self.writes.lock().unwrap_or_else(PoisonError::into_inner).clone()
        }

        /// Makes the next write fail as a failed completion would.
        pub(crate) fn fail_next(&self) {
            self.fail_next.store(true, Ordering::SeqCst);
        }
    }

    impl RemoteWriter for Recorder {
        fn write(
            &self,
            addr: u64,
            rkey: u32,
            imm: u32,
            lease: Lease,
        ) -> BoxFuture<'_, WriteResult> {
            if self.fail_next.swap(false, Ordering::SeqCst) {
                let failed = PushError::Fatal(
                    "work request failed: transport retry counter exceeded".into(),
                );
                return Box::pin(std::future::ready(Err(failed)));
            }
            let write = Write { addr, rkey, imm, bytes: lease.to_vec() };
            self.writes.lock().unwrap_or_else(PoisonError::into_inner).push(write);
            Box::pin(std::future::ready(Ok(())))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sidecar::staging::StagingPool;

    fn pool() -> RemotePool {
        RemotePool {
            addr: 0x7f00_0000_0000,
            len: 4 * 4096,
            rkey: 0x55,
            slot_size: 4096,
            slot_count: 4,
        }
    }

    fn ok(len: u32) -> DataHeader {
        DataHeader { status: Status::Ok, needle_flags: 0, data_len: len, needle_size: len, crc: 0 }
    }

    async fn lease(staging: &StagingPool, bytes: &[u8]) -> Lease {
        let mut lease = staging.acquire(bytes.len(), Duration::from_secs(1)).await.expect("slabs");
        let mut at = 0;
        for chunk in lease.chunks_mut() {
            chunk.copy_from_slice(&bytes[at..at + chunk.len()]);
            at += chunk.len();
        }
        lease
    }

    #[test]
    fn verbs_writes_only_inside_the_named_slot() {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let staging = StagingPool::new(1024, 8);
            let recorder = Arc::new(Recorder::default());
            let pusher = VerbsPusher::new(pool(), recorder.clone());
            let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();

            // Inside slot 2 (three slabs gathered): written, DATA without payload.
            let at = Dest { slot: 2, offset: 96 };
            let got = deliver(&pusher, 7, at, ok(3000), Some(lease(&staging, &data).await)).await;
            let (header, payload) = got.expect("delivered");
            assert_eq!(
                (header.status, header.data_len, payload.is_none()),
                (Status::Ok, 3000, true)
            );
            let writes = recorder.writes();
            assert_eq!(writes.len(), 1);
            assert_eq!(
                (writes[0].addr, writes[0].rkey, writes[0].imm),
                (0x7f00_0000_0000 + 2 * 4096 + 96, 0x55, 7)
            );
            assert_eq!(writes[0].bytes, data);

            // One byte past the slot's end, a slot that does not exist: refused, nothing written.
            for dest in [Dest { slot: 0, offset: 4096 - 2999 }, Dest { slot: 4, offset: 0 }] {
                let got = deliver(&pusher, 8, dest, ok(3000), Some(lease(&staging, &data).await));
                let (header, payload) = got.await.expect("answered");
                assert_eq!((header.status, header.data_len), (Status::BadRequest, 0), "{dest:?}");
                assert!(payload.is_none());
            }
            assert_eq!(recorder.writes().len(), 1, "nothing more written");
            assert_eq!(pusher.check(Dest { slot: 4, offset: 0 }), Err(Status::BadRequest));
            assert_eq!(pusher.check(Dest { slot: 3, offset: 4097 }), Err(Status::BadRequest));
            assert_eq!(pusher.check(Dest { slot: 3, offset: 4096 }), Ok(()));

            // Empty answers and other statuses write nothing.
            let empty = staging.acquire(0, Duration::from_secs(1)).await;
            let got = deliver(&pusher, 9, Dest { slot: 3, offset: 4096 }, ok(0), empty).await;
            assert_eq!(got.expect("delivered").0.status, Status::Ok);
            let missing = DataHeader::error(Status::NotFound);
            let got = deliver(&pusher, 10, Dest { slot: 9, offset: 0 }, missing, None).await;
            assert_eq!(got.expect("answered").0.status, Status::NotFound);
            assert_eq!(recorder.writes().len(), 1);

            // A failed write closes the connection.
            recorder.fail_next();
            let got = deliver(&pusher, 11, at, ok(10), Some(lease(&staging, &data[..10]).await));
            assert!(got.await.expect_err("fatal").contains("retry"));
            assert_eq!(staging.in_use(), 0, "every lease went back");
        });
    }

    #[test]
    fn tcp_hands_the_bytes_to_the_frame() {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let staging = StagingPool::new(16, 2);
            let pusher = TcpPusher;
            assert_eq!(pusher.check(Dest { slot: u32::MAX, offset: u32::MAX }), Ok(()));
            let got = deliver(
                &pusher,
                1,
                Dest { slot: 9, offset: 9 },
                ok(20),
                Some(lease(&staging, &[3; 20]).await),
            );
            let (header, payload) = got.await.expect("delivered");
            assert_eq!(header.data_len, 20);
            assert_eq!(payload.expect("bytes in the frame").to_vec(), [3; 20]);
        });
    }
}
