//! Open files the native loop may answer READs for, and how one READ becomes engine ops.
//!
//! The Python side registers a handle at `open` with the file's chunk list as it planned it
//! (overlaps resolved by [`Plan`]) and, per chunk, the sidecar to ask and the needle's id.
//! A READ that touches a chunk with no sidecar, or one that must be fetched whole
//! (compressed, encrypted), is declined: the Python operations answer it.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, RwLock};

use super::readahead::Stream;
use crate::engine::RangeOp;
use crate::error::Result;
use crate::plan::{ChunkSpec, Plan};

/// Where one chunk's needle is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Sidecar address, `"host:port"`.
    pub sidecar: String,
    /// Volume id.
    pub volume: u32,
    /// Needle key.
    pub key: u64,
    /// Needle cookie.
    pub cookie: u32,
    /// Read JWT, empty when none is needed.
    pub jwt: String,
}

/// What a READ needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Planned {
    /// A read the engine can serve.
    Read {
        /// Bytes the reply carries (short at end of file).
        len: usize,
        /// Engine ops filling their ranges of a `len`-byte buffer.
        ops: Vec<RangeOp>,
        /// Ranges of that buffer no chunk covers: zeros.
        holes: Vec<Range<usize>>,
    },
    /// The Python operations must answer it; the reason is for counters and logs.
    Decline(&'static str),
}

/// One registered file: its plan and a route per chunk (`None`: no sidecar for it).
#[derive(Debug)]
pub struct NativeFile {
    plan: Plan,
    routes: Vec<Option<Route>>,
    /// This handle's read-ahead (`readahead.rs`): it lives and dies with the handle.
    pub(super) ahead: Stream,
}

impl NativeFile {
    /// A file from its chunks (in the filer's order) and the entry's size.
    ///
    /// # Errors
    /// [`crate::Error::BadPlan`] when the chunks cannot be planned.
    pub fn new(chunks: Vec<(ChunkSpec, Option<Route>)>, attr_size: u64) -> Result<NativeFile> {
        let (specs, routes): (Vec<_>, Vec<_>) = chunks.into_iter().unzip();
        Ok(NativeFile { plan: Plan::new(specs, attr_size)?, routes, ahead: Stream::default() })
    }

    /// The same file for another handle: its plan and routes, and a read-ahead of its own.
    pub fn fresh(&self) -> NativeFile {
        NativeFile {
            plan: self.plan.clone(),
            routes: self.routes.clone(),
            ahead: Stream::default(),
        }
    }

    /// The ops for a READ of `size` bytes at `offset`, each at most `op_bytes` long.
    pub fn plan_read(&self, offset: u64, size: u32, op_bytes: u32) -> Planned {
        let len = self.plan.read_len(offset, u64::from(size)) as usize;
        let mut ops = Vec::new();
        let mut holes = Vec::new();
        let mut at = 0usize;
        for e in self.plan.extents(offset, len as u64) {
            if e.whole {
                return Planned::Decline("whole_chunk");
            }
            let Some(Some(route)) = self.routes.get(e.chunk) else {
                return Planned::Decline("no_sidecar");
            };
            let start = e.buf_offset as usize;
            if start > at {
                holes.push(at..start);
            }
            let mut done = 0u64;
            while done < e.len {
                let n = (e.len - done).min(u64::from(op_bytes.max(1)));
                ops.push(RangeOp {
                    sidecar: route.sidecar.clone(),
                    volume: route.volume,
                    key: route.key,
                    cookie: route.cookie,
                    offset: e.offset_in_chunk + done,
                    // At most op_bytes, a u32.
                    len: n as u32,
                    buf_offset: start + done as usize,
                    jwt: route.jwt.clone(),
                });
                done += n;
            }
            at = start + e.len as usize;
        }
        if at < len {
            holes.push(at..len);
        }
        Planned::Read { len, ops, holes }
    }
}

/// Handles -> files, shared by the loop's threads and the registering thread.
#[derive(Debug, Default)]
pub struct Registry {
    files: RwLock<HashMap<u64, Arc<NativeFile>>>,
}

impl Registry {
    /// Answers READs of `fh` from `file` from now on.
    pub fn insert(&self, fh: u64, file: NativeFile) {
        self.files.write().unwrap_or_else(|e| e.into_inner()).insert(fh, Arc::new(file));
    }

    /// Stops answering READs of `fh` natively; whether it was registered.
    pub fn remove(&self, fh: u64) -> bool {
        self.files.write().unwrap_or_else(|e| e.into_inner()).remove(&fh).is_some()
    }

    /// The file registered for `fh`.
    pub fn get(&self, fh: u64) -> Option<Arc<NativeFile>> {
        self.files.read().unwrap_or_else(|e| e.into_inner()).get(&fh).cloned()
    }

    /// How many handles are registered.
    pub fn len(&self) -> usize {
        self.files.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no handle is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(key: u64) -> Option<Route> {
        Some(Route { sidecar: "s:1".into(), volume: 3, key, cookie: 9, jwt: String::new() })
    }

    fn chunk(offset: u64, size: u64, ts: i64, whole: bool) -> ChunkSpec {
        ChunkSpec { offset, size, modified_ts_ns: ts, whole }
    }

    #[test]
    fn holes_and_splits_cover_the_read_exactly() {
        // [0,100) chunk 1, [100,150) hole, [150,400) chunk 2; file size 500 (tail hole).
        let f = NativeFile::new(
            vec![(chunk(0, 100, 1, false), route(1)), (chunk(150, 250, 1, false), route(2))],
            500,
        )
        .expect("plans");
        let Planned::Read { len, ops, holes } = f.plan_read(50, 1000, 100) else {
            panic!("declined");
        };
        assert_eq!(len, 450);
        assert_eq!(holes, vec![50..100, 350..450]);
        let got: Vec<(u64, u64, u32, usize)> =
            ops.iter().map(|o| (o.key, o.offset, o.len, o.buf_offset)).collect();
        assert_eq!(
            got,
            vec![(1, 50, 50, 0), (2, 0, 100, 100), (2, 100, 100, 200), (2, 200, 50, 300)]
        );
        // Every byte is either an op's or a hole's, once.
        let mut seen = vec![0u8; len];
        for o in &ops {
            seen[o.buf_offset..o.buf_offset + o.len as usize].iter_mut().for_each(|b| *b += 1);
        }
        for h in &holes {
            seen[h.clone()].iter_mut().for_each(|b| *b += 1);
        }
        assert!(seen.iter().all(|&b| b == 1));
    }

    #[test]
    fn past_the_end_is_empty_and_whole_or_unrouted_chunks_decline() {
        let f = NativeFile::new(
            vec![
                (chunk(0, 10, 1, false), route(1)),
                (chunk(10, 10, 1, true), route(2)),
                (chunk(20, 10, 1, false), None),
            ],
            30,
        )
        .expect("plans");
        assert_eq!(
            f.plan_read(30, 4096, 1 << 20),
            Planned::Read { len: 0, ops: vec![], holes: vec![] }
        );
        assert_eq!(f.plan_read(5, 10, 1 << 20), Planned::Decline("whole_chunk"));
        assert_eq!(f.plan_read(25, 10, 1 << 20), Planned::Decline("no_sidecar"));
        assert!(matches!(f.plan_read(0, 10, 1 << 20), Planned::Read { len: 10, .. }));
    }

    #[test]
    fn the_registry_adds_and_forgets_handles() {
        let reg = Registry::default();
        assert!(reg.is_empty());
        reg.insert(4, NativeFile::new(vec![(chunk(0, 1, 1, false), route(1))], 1).expect("plans"));
        assert!(reg.get(4).is_some() && reg.get(5).is_none());
        assert!(reg.remove(4));
        assert!(!reg.remove(4));
        assert_eq!(reg.len(), 0);
    }
}
