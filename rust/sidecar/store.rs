//! The volumes this sidecar reads itself, found by scanning the volume directories.
//!
//! Everything here does file I/O and runs on blocking threads. Each volume sits behind an
//! `RwLock`: reads share it, and only [`Volume::refresh`] (following `.idx` growth, or
//! re-opening after a vacuum) takes it exclusively, so a location found under a read guard
//! stays valid for every read made under that same guard.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::read::{DataMeta, Span};
use super::staging::Lease;
use super::stats::Stats;
use crate::error::{Error, Result};
use crate::volume::{scan_dir, RefreshOutcome, Volume};

/// A lookup for an unknown volume id re-scans the directories at most this often.
const MISS_RESCAN_INTERVAL: Duration = Duration::from_millis(250);

/// What a local read came to.
#[derive(Debug)]
pub(crate) enum LocalRead {
    /// The bytes are in the lease (its length is what was served).
    Done { meta: DataMeta, lease: Lease },
    /// The read needs a lease of `len` bytes; call again with one.
    NeedLease { len: usize },
    /// The clamped range is longer than the sidecar serves in one read.
    TooLarge { len: u64 },
}

/// One local volume.
#[derive(Debug)]
pub(crate) struct OpenVolume {
    volume: RwLock<Volume>,
    /// `.dat` inode, `.idx` inode and `.idx` length at the last refresh.
    seen: Mutex<Option<FileState>>,
}

type FileState = (u64, u64, u64);

impl OpenVolume {
    fn new(volume: Volume) -> OpenVolume {
        let seen = Mutex::new(file_state(&volume));
        OpenVolume { volume: RwLock::new(volume), seen }
    }

    /// Refreshes only when the files look changed. A refresh takes the volume exclusively,
    /// which would stall reads every period for nothing; appends grow `.idx` and a vacuum
    /// renames new files in, so unchanged inodes and length mean nothing to apply.
    fn refresh_if_changed(&self) -> Result<()> {
        let now = file_state(&self.volume.read().unwrap_or_else(PoisonError::into_inner));
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if now.is_some() && now == *seen {
            return Ok(());
        }
        self.refresh()?;
        *seen = now;
        Ok(())
    }

    fn refresh(&self) -> Result<RefreshOutcome> {
        let outcome = self.volume.write().unwrap_or_else(PoisonError::into_inner).refresh()?;
        if outcome == RefreshOutcome::Reopened {
            let vol = self.volume.read().unwrap_or_else(PoisonError::into_inner);
            info!(volume = vol.id(), "volume files were replaced (vacuum?); re-opened");
        }
        Ok(outcome)
    }

    /// Refreshes when `.idx` has entries the map lacks. Concurrent readers that all saw it
    /// behind queue on the write lock; the check is repeated under it so that only the
    /// first of them does the work.
    fn catch_up(&self) -> Result<()> {
        let mut vol = self.volume.write().unwrap_or_else(PoisonError::into_inner);
        if vol.index_behind() && vol.refresh()? == RefreshOutcome::Reopened {
            info!(volume = vol.id(), "volume files were replaced (vacuum?); re-opened");
        }
        Ok(())
    }

    /// Reads `span` of needle `key` into `lease` (which must hold at least the clamped
    /// length, else [`LocalRead::NeedLease`] says how much).
    ///
    /// The map is first brought up to date with `.idx` if that has grown (or was replaced):
    /// the volume server records a deletion there before it acknowledges it, so a deleted
    /// needle is never served, whatever `--rescan-secs` is. A key the map still lacks is
    /// looked for once more after another such check, for a needle written a moment ago.
    ///
    /// # Errors
    /// What [`Volume::refresh`], [`Volume::locate`], [`Volume::read_meta`] and
    /// [`Volume::read_data`] return.
    pub(crate) fn read(
        &self,
        key: u64,
        cookie: u32,
        span: Span,
        mut lease: Option<Lease>,
        max_read: u64,
    ) -> Result<LocalRead> {
        if self.volume.read().unwrap_or_else(PoisonError::into_inner).index_behind() {
            self.catch_up()?;
        }
        let mut vol = self.volume.read().unwrap_or_else(PoisonError::into_inner);
        let loc = match vol.locate(key, cookie) {
            Ok(loc) => loc,
            // Written between the look at `.idx` above and here? (A wrong cookie or an
            // unknown key costs no refresh: `.idx` has nothing new then.)
            Err(Error::NotFound { .. }) => {
                drop(vol);
                self.catch_up()?;
                vol = self.volume.read().unwrap_or_else(PoisonError::into_inner);
                vol.locate(key, cookie)?
            }
            Err(e) => return Err(e),
        };
        let (start, len) = span.clamp(loc.data_size);
        if len > max_read {
            return Ok(LocalRead::TooLarge { len });
        }
        // `len` fits in u32 (it is at most the data size).
        let len = len as usize;
        let Some(mut lease) = lease.take().filter(|l| l.capacity() >= len) else {
            return Ok(LocalRead::NeedLease { len });
        };
        // Under the same read guard as `locate`, so the location cannot go stale.
        let meta = vol.read_meta(&loc)?;
        let meta = DataMeta { flags: meta.flags, crc: meta.crc, data_size: loc.data_size };
        lease.set_len(len);
        let mut at = start;
        for chunk in lease.chunks_mut() {
            vol.read_data(&loc, at, chunk)?;
            at += chunk.len() as u64;
        }
        Ok(LocalRead::Done { meta, lease })
    }
}

/// What the files of `volume` look like now; `None` when they cannot be looked at.
fn file_state(volume: &Volume) -> Option<FileState> {
    let files = volume.files();
    let dat = std::fs::metadata(&files.dat).ok()?;
    let idx = std::fs::metadata(&files.idx).ok()?;
    Some((dat.ino(), idx.ino(), idx.len()))
}

#[derive(Debug, Default)]
struct Known {
    volumes: HashMap<u32, Arc<OpenVolume>>,
    ec: HashSet<u32>,
}

/// The local volumes of all `--dir`s.
#[derive(Debug)]
pub(crate) struct Store {
    dirs: Vec<PathBuf>,
    known: RwLock<Known>,
    /// `.dat` files that failed to open, so each is warned about once.
    unreadable: Mutex<HashSet<PathBuf>>,
    last_miss_scan: Mutex<Option<Instant>>,
    stats: Arc<Stats>,
}

impl Store {
    /// Scans `dirs` once.
    ///
    /// # Errors
    /// [`Error::Io`] when a directory cannot be listed.
    pub(crate) fn open(dirs: Vec<PathBuf>, stats: Arc<Stats>) -> Result<Store> {
        let store = Store {
            dirs,
            known: RwLock::default(),
            unreadable: Mutex::default(),
            last_miss_scan: Mutex::new(None),
            stats,
        };
        store.scan()?;
        Ok(store)
    }

    pub(crate) fn volume_count(&self) -> usize {
        self.known.read().unwrap_or_else(PoisonError::into_inner).volumes.len()
    }

    /// Picks up new volumes and forgets removed ones.
    ///
    /// # Errors
    /// [`Error::Io`] when a directory cannot be listed (nothing changes then).
    pub(crate) fn scan(&self) -> Result<()> {
        let mut found = Vec::new();
        let mut ec = HashSet::new();
        for dir in &self.dirs {
            let scan = scan_dir(dir)?;
            found.extend(scan.volumes);
            ec.extend(scan.ec_volumes);
        }
        let present: HashSet<u32> = found.iter().map(|f| f.vid).collect();
        let mut opened = Vec::new();
        {
            let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
            for files in found.iter().filter(|f| !known.volumes.contains_key(&f.vid)) {
                match Volume::open(&files.dat) {
                    Ok(volume) => opened.push(volume),
                    Err(e) => {
                        let mut unreadable =
                            self.unreadable.lock().unwrap_or_else(PoisonError::into_inner);
                        if unreadable.insert(files.dat.clone()) {
                            warn!(
                                volume = files.vid,
                                "not reading volume locally (served via the volume server): {e}"
                            );
                        }
                    }
                }
            }
        }
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        known.volumes.retain(|vid, _| present.contains(vid));
        for volume in opened {
            debug!(volume = volume.id(), needles = volume.needle_count(), "volume opened");
            known.volumes.entry(volume.id()).or_insert_with(|| Arc::new(OpenVolume::new(volume)));
        }
        known.ec = ec;
        self.stats.volumes.store(known.volumes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Catches every volume up with its `.idx` (and notices vacuums).
    pub(crate) fn refresh_all(&self) {
        let slots: Vec<Arc<OpenVolume>> = self
            .known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .volumes
            .values()
            .cloned()
            .collect();
        for slot in slots {
            if let Err(e) = slot.refresh_if_changed() {
                // Usually a volume being deleted or moved; the next scan drops it.
                debug!("refreshing a volume failed: {e}");
            }
        }
    }

    /// The volume `vid` if it is open already: never looks at the disk (for async threads).
    pub(crate) fn get_known(&self, vid: u32) -> Option<Arc<OpenVolume>> {
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        known.volumes.get(&vid).map(Arc::clone)
    }

    /// The volume `vid` when it is local; an unknown id triggers a (rate-limited) re-scan,
    /// so a volume created since the last scan is found.
    pub(crate) fn get(&self, vid: u32) -> Option<Arc<OpenVolume>> {
        {
            let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = known.volumes.get(&vid) {
                return Some(Arc::clone(slot));
            }
            if known.ec.contains(&vid) {
                return None;
            }
        }
        {
            let mut last = self.last_miss_scan.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < MISS_RESCAN_INTERVAL) {
                return None;
            }
            *last = Some(Instant::now());
        }
        if let Err(e) = self.scan() {
            warn!("re-scanning the volume directories failed: {e}");
        }
        self.known.read().unwrap_or_else(PoisonError::into_inner).volumes.get(&vid).cloned()
    }
}
