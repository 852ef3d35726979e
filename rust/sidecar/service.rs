//! One read, from request to answer, shared by the protocol listener and HTTP `/read`:
//! check the token, read locally when the volume is here, else fetch it upstream.

use std::sync::Arc;

use tokio::runtime::Handle;
use tracing::{debug, warn};

use super::jwt::JwtCheck;
use super::read::{Answer, ReadAsk};
use super::staging::{Lease, StagingPool};
use super::stats::{Gauges, Source, Stats};
use super::store::{LocalRead, Store};
use super::upstream::{Fetched, Upstream};
use super::STAGING_WAIT;
use crate::error::Error;
use crate::fid::FileId;
use crate::proto::Status;
use crate::volume;

/// Everything a read needs, shared by all connections.
#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) store: Arc<Store>,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) pool: StagingPool,
    pub(crate) jwt: Option<JwtCheck>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) max_read: u32,
    /// Slabs one protocol connection may hold at once (for the stats).
    pub(crate) conn_staging_slabs: usize,
    /// The RDMA device serving verbs connections, if any (for the stats).
    pub(crate) rdma_device: Option<String>,
}

impl Service {
    /// Answers one read from the shared staging pool and counts it.
    pub(crate) async fn read(self: &Arc<Self>, ask: ReadAsk) -> Answer {
        let answer = self.answer(ask, &self.pool).await;
        let bytes = answer.payload.as_ref().map_or(0, Lease::len);
        self.stats.record(answer.header.status, answer.source, bytes);
        answer
    }

    pub(crate) fn gauges(&self) -> Gauges {
        Gauges {
            staging_slabs: self.pool.slab_count(),
            staging_slab_size: self.pool.slab_size(),
            staging_in_use: self.pool.in_use(),
            staging_per_connection: self.conn_staging_slabs,
            rdma_device: self.rdma_device.clone(),
        }
    }

    /// Answers one read without counting it: the protocol listener counts it once the
    /// bytes are delivered, since delivery can still refuse it (a verbs slot too small).
    /// The bytes are staged through `pool`: a connection's capped view of [`Service::pool`].
    pub(crate) async fn answer(self: &Arc<Self>, ask: ReadAsk, pool: &StagingPool) -> Answer {
        if let Some(check) = &self.jwt {
            if !check.allows(&ask.jwt, &ask.fid) {
                return Answer::refuse(Status::Unauthorized);
            }
        }
        match self.read_local(&ask, pool).await {
            Ok(answer) => answer,
            Err(()) => self.read_upstream(ask, pool).await,
        }
    }

    /// The answer from the local volume files; `Err` when they cannot give one (the
    /// volume is not here, or reading it failed in a way the volume server may not).
    async fn read_local(self: &Arc<Self>, ask: &ReadAsk, pool: &StagingPool) -> Result<Answer, ()> {
        let FileId { volume, key, cookie } = ask.fid;
        let span = ask.span;
        let max_read = u64::from(self.max_read);
        // The common case, a range of at most one slab, draws its slab up front; others
        // learn their length first.
        let mut lease = None;
        if span.len <= pool.slab_size() as u64 {
            let Some(l) = pool.acquire(span.len as usize, STAGING_WAIT).await else {
                return Ok(busy());
            };
            lease = Some(l);
        }
        // A small read of cached pages is done on this thread: a trip to a blocking thread
        // and back (two wake-ups) costs more than the read itself.
        let mut cached = None;
        if span.len <= INLINE_MAX && volume::page_cache_reads_work() {
            if let Some(slot) = self.store.get_known(volume) {
                let given = lease.take();
                match volume::from_page_cache(|| slot.read(key, cookie, span, given, max_read)) {
                    // Its slab went back to the pool with the error.
                    Err(e) if volume::would_block(&e) => {
                        let Some(l) = pool.acquire(span.len as usize, STAGING_WAIT).await else {
                            return Ok(busy());
                        };
                        lease = Some(l);
                    }
                    read => cached = Some(read),
                }
            }
        }
        for _ in 0..3 {
            let read = match cached.take() {
                Some(read) => read,
                None => {
                    let store = Arc::clone(&self.store);
                    let given = lease.take();
                    let outcome = tokio::task::spawn_blocking(move || {
                        let slot = store.get(volume)?;
                        Some(slot.read(key, cookie, span, given, max_read))
                    })
                    .await;
                    match outcome {
                        Ok(Some(read)) => read,
                        Ok(None) => return Err(()),
                        Err(e) => {
                            warn!(%ask.fid, "local read task failed: {e}");
                            return Ok(Answer::refuse(Status::Internal));
                        }
                    }
                }
            };
            match step(ask, read) {
                Step::Answer(answer) => return Ok(answer),
                Step::Upstream => return Err(()),
                Step::NeedLease(len) => {
                    let Some(l) = pool.acquire(len, STAGING_WAIT).await else {
                        return Ok(busy());
                    };
                    lease = Some(l);
                }
            }
        }
        warn!(%ask.fid, "needle kept changing size while being read; asking the volume server");
        Err(())
    }

    async fn read_upstream(self: &Arc<Self>, ask: ReadAsk, pool: &StagingPool) -> Answer {
        let service = Arc::clone(self);
        let pool = pool.clone();
        let rt = Handle::current();
        let fid = ask.fid;
        let fetched = tokio::task::spawn_blocking(move || {
            let max_read = u64::from(service.max_read);
            service.upstream.fetch(&ask.fid, ask.span, &ask.jwt, &pool, &rt, max_read)
        })
        .await;
        match fetched {
            Ok(Ok(Fetched::Done { meta, lease })) => Answer::data(meta, lease, Source::Upstream),
            Ok(Ok(Fetched::Refused(status))) => Answer::refuse(status),
            Ok(Err(message)) => {
                warn!(%fid, "upstream read failed: {message}");
                Answer::refuse(Status::Internal)
            }
            Err(e) => {
                warn!(%fid, "upstream read task failed: {e}");
                Answer::refuse(Status::Internal)
            }
        }
    }
}

/// Largest read tried on the async thread from the page cache (see `read_local`); larger
/// copies would hold the thread up longer than the hop they save.
const INLINE_MAX: u64 = 256 << 10;

/// What a local read leads to.
enum Step {
    Answer(Answer),
    /// Ask the volume server instead.
    Upstream,
    /// Read again with a slab of this many bytes.
    NeedLease(usize),
}

fn step(ask: &ReadAsk, read: Result<LocalRead, Error>) -> Step {
    match read {
        Ok(LocalRead::Done { meta, lease }) => {
            Step::Answer(Answer::data(meta, lease, Source::Local))
        }
        Ok(LocalRead::NeedLease { len }) => Step::NeedLease(len),
        Ok(LocalRead::TooLarge { len }) => {
            debug!(%ask.fid, len, "read larger than --max-read");
            Step::Answer(Answer::refuse(Status::BadRequest))
        }
        Err(Error::NotFound { .. }) => Step::Answer(Answer::refuse(Status::NotFound)),
        Err(Error::Deleted { .. }) => Step::Answer(Answer::refuse(Status::Deleted)),
        Err(e) => {
            warn!(%ask.fid, "local read failed, asking the volume server: {e}");
            Step::Upstream
        }
    }
}

/// The answer when no staging slab frees up in time.
fn busy() -> Answer {
    Answer::refuse(Status::Busy)
}
