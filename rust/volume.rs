//! A read-only view of one volume's `.dat`/`.idx` pair, as a sidecar beside the volume
//! server reads it.
//!
//! The needle map is built from `.idx` and followed as it grows ([`Volume::refresh`]);
//! all reads are positioned (`pread`), so a [`Volume`] is shared across threads behind an
//! `RwLock`: reads take `&self`, only `refresh` needs `&mut self`.
//!
//! Never serving stale offsets rests on three checks. `refresh` re-opens both files and
//! rebuilds the map when a vacuum may have happened (either file's inode changed, the
//! superblock's compaction revision changed, or `.idx` shrank). Every [`Location`] carries
//! the identity of the open files it came from, and [`Volume::read_data`] refuses one from
//! other files. And every lookup checks the key and size in the record header at the
//! indexed offset, so an offset that does not point at the needle is an error, not bytes.
//!
//! A reader that must not serve a needle the volume server has already deleted asks
//! [`Volume::index_behind`] before locating: the volume server appends the tombstone entry
//! to `.idx` before it answers the delete, so a look at `.idx` (one `stat`) tells whether
//! the map may be missing a deletion, and only then is a `refresh` needed.
//!
//! The `.idx` entry width (16 or 17 bytes) comes from the `.vif`; see [`IndexLayout`].
//!
//! An async caller may read without blocking its thread on the disk: inside
//! [`from_page_cache`], the reads of `.dat` take only what the page cache holds
//! (`preadv2` with `RWF_NOWAIT`), and anything else fails at once with an
//! [`io::ErrorKind::WouldBlock`] error (see [`would_block`]), for the caller to do again
//! on a thread that may wait.

pub(crate) mod files;
mod index;
mod superblock;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use files::{parse_volume_file_name, scan_dir, DirScan, VolumeFiles};
pub use index::{IndexEntry, IndexLayout, TOMBSTONE_SIZE};
pub use superblock::{SuperBlock, SUPER_BLOCK_SIZE};

use crate::error::{Error, Result};
use crate::needle::{self, Header, Needle, CHECKSUM_SIZE, DATA_OFFSET, HEADER_SIZE};
use index::NeedleMap;

/// How often opening retries when a vacuum swaps the files in the middle of it.
const OPEN_ATTEMPTS: usize = 5;

/// `.idx` bytes read per call while building the map, so a large index does not need one
/// buffer of its whole size. A multiple of both entry widths.
const INDEX_READ_CHUNK: u64 = 16 * 17 * 4096;

/// [`Volume::read_meta`] reads the flags byte and the CRC in one go when they are at most
/// this many bytes apart (end to end), else with two reads.
const META_READ_MAX: usize = 128;

/// Source of the ids that tie a [`Location`] to the open files it was found in.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Set while this thread runs [`from_page_cache`].
    static PAGE_CACHE_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Cleared the first time the kernel or filesystem refuses `RWF_NOWAIT`, after which
/// [`from_page_cache`] declines at once.
static NOWAIT_WORKS: AtomicBool = AtomicBool::new(true);

/// Whether [`from_page_cache`] can work here: false once the kernel or filesystem has
/// refused `RWF_NOWAIT`, so a caller need not prepare for a try that cannot succeed.
pub fn page_cache_reads_work() -> bool {
    NOWAIT_WORKS.load(Ordering::Relaxed)
}

/// Runs `f`, whose reads of `.dat` are served only from the page cache: one that would
/// wait for the disk fails with an error for which [`would_block`] is true. Meant for an
/// async thread that then redoes the work on a blocking one.
///
/// # Errors
/// What `f` returns; a [`would_block`] error when `RWF_NOWAIT` is not available here.
pub fn from_page_cache<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    if !page_cache_reads_work() {
        return Err(Error::io("(page cache)", io::ErrorKind::WouldBlock.into()));
    }
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            PAGE_CACHE_ONLY.with(|c| c.set(false));
        }
    }
    PAGE_CACHE_ONLY.with(|c| c.set(true));
    let _reset = Reset;
    f()
}

/// Whether `e` means "not in the page cache" (see [`from_page_cache`]).
pub fn would_block(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == io::ErrorKind::WouldBlock)
}

/// `pread` of all of `buf` at `at` that takes only cached pages: a short count then means
/// the rest is not cached. `Ok(0)` is the end of the file.
fn pread_nowait(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let offset = libc::off_t::try_from(at).map_err(|_| io::ErrorKind::InvalidInput)?;
    let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: `iov` describes `buf`, which is valid for writes of its length and borrowed
    // mutably for the call; the descriptor is owned by `file`, which outlives the call.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `read_exact_at`, or, inside [`from_page_cache`], its page-cache-only twin.
fn read_exact_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    if !PAGE_CACHE_ONLY.with(Cell::get) {
        return file.read_exact_at(buf, at);
    }
    let mut done = 0;
    while done < buf.len() {
        match pread_nowait(file, &mut buf[done..], at + done as u64) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
            Err(e) => {
                // EOPNOTSUPP/EINVAL: no RWF_NOWAIT for this file here; stop trying it.
                NOWAIT_WORKS.store(false, Ordering::Relaxed);
                return Err(io::Error::new(io::ErrorKind::WouldBlock, e));
            }
        }
    }
    Ok(())
}

/// What [`Volume::refresh`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// Nothing new in `.idx`.
    Unchanged,
    /// New `.idx` entries were applied to the map.
    Appended {
        /// How many.
        entries: usize,
    },
    /// The files were replaced (a vacuum) or shrank: both were re-opened and the map rebuilt.
    /// Every earlier [`Location`] is now refused.
    Reopened,
}

/// Where a live needle's data lies in `.dat`, as [`Volume::locate`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Needle key.
    pub key: u64,
    /// Needle cookie (checked against the record header).
    pub cookie: u32,
    /// Byte offset of the record in `.dat`.
    pub offset: u64,
    /// The record's body size.
    pub size: u32,
    /// Byte offset in `.dat` where the data starts.
    pub data_offset: u64,
    /// Bytes of data.
    pub data_size: u32,
    generation: u64,
}

/// What a needle's record says about its data besides the bytes, as [`Volume::read_meta`]
/// reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NeedleMeta {
    /// The flags byte ([`needle::FLAG_COMPRESSED`] and the others); 0 where the record has
    /// none (version 1, and an empty body).
    pub flags: u8,
    /// The CRC32-C of the data as stored in the tail, in either form
    /// ([`needle::crc_matches`] accepts both).
    pub crc: u32,
}

/// A read-only view of one volume. See the [module docs](self).
#[derive(Debug)]
pub struct Volume {
    files: VolumeFiles,
    state: State,
}

/// Everything that a re-open replaces at once.
#[derive(Debug)]
struct State {
    dat: File,
    idx: File,
    dat_inode: (u64, u64),
    idx_inode: (u64, u64),
    super_block: SuperBlock,
    layout: IndexLayout,
    map: NeedleMap,
    /// `.idx` bytes applied so far; always a whole number of entries.
    idx_applied: u64,
    generation: u64,
}

impl Volume {
    /// Opens the volume whose `.dat` is `dat` (the `.idx` beside it) and builds its map.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a file name that is not a volume's, an unknown version or
    /// `.idx` layout; [`Error::Io`] when a file cannot be opened or read.
    pub fn open(dat: impl AsRef<Path>) -> Result<Volume> {
        let files = VolumeFiles::from_dat(dat.as_ref())?;
        let state = State::open(&files)?;
        Ok(Volume { files, state })
    }

    /// Volume id.
    pub fn id(&self) -> u32 {
        self.files.vid
    }

    /// Collection name, empty for the default collection.
    pub fn collection(&self) -> &str {
        &self.files.collection
    }

    /// The volume's file paths.
    pub fn files(&self) -> &VolumeFiles {
        &self.files
    }

    /// The superblock read when the files were last opened.
    pub fn super_block(&self) -> &SuperBlock {
        &self.state.super_block
    }

    /// The `.idx` entry width in use.
    pub fn index_layout(&self) -> IndexLayout {
        self.state.layout
    }

    /// Needles whose latest `.idx` entry is not a deletion.
    pub fn needle_count(&self) -> usize {
        self.state.map.live()
    }

    /// The latest `.idx` entry for `key`, tombstones included.
    pub fn index_entry(&self, key: u64) -> Option<IndexEntry> {
        self.state.map.get(key).copied()
    }

    /// Catches up with the volume server: applies `.idx` entries appended since the last
    /// call, or re-opens everything when the files were replaced.
    ///
    /// # Errors
    /// [`Error::Io`] when a file is gone or unreadable, and what [`Volume::open`] returns
    /// when re-opening fails; the volume keeps its previous state then.
    pub fn refresh(&mut self) -> Result<RefreshOutcome> {
        let files = &self.files;
        let state = &mut self.state;
        let replaced = inode_of(&files.dat)? != state.dat_inode
            || inode_of(&files.idx)? != state.idx_inode
            || SuperBlock::read(&state.dat, &files.dat)?.compaction_revision
                != state.super_block.compaction_revision;
        if !replaced {
            match state.apply_new_entries(files)? {
                Some(0) => return Ok(RefreshOutcome::Unchanged),
                Some(entries) => return Ok(RefreshOutcome::Appended { entries }),
                None => {} // .idx shrank: only a rewrite does that.
            }
        }
        self.state = State::open(&self.files)?;
        Ok(RefreshOutcome::Reopened)
    }

    /// Whether `.idx` on disk may hold entries the map lacks: it grew by at least one
    /// whole entry, shrank, or is another file (a vacuum). Also `true` when `.idx` cannot
    /// be looked at, so that the [`Volume::refresh`] which follows reports why.
    ///
    /// This looks at the path rather than the open handle: after a vacuum the volume
    /// server appends to the new `.idx`, and the handle would keep showing the old one.
    /// It costs one `stat`, cheap enough to ask before every read.
    pub fn index_behind(&self) -> bool {
        let Ok(meta) = fs::metadata(&self.files.idx) else { return true };
        let state = &self.state;
        if (meta.dev(), meta.ino()) != state.idx_inode {
            return true;
        }
        // A trailing partial entry is still being written; refresh would not apply it.
        let entry = state.layout.entry_size() as u64;
        meta.len() < state.idx_applied || meta.len() - state.idx_applied >= entry
    }

    /// Finds a live needle and checks its record header.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a key the map lacks or a cookie that differs (the volume
    /// server answers both alike); [`Error::Deleted`] for a deletion; [`Error::CorruptNeedle`]
    /// when the record at the indexed offset is another needle or its sizes do not add up.
    pub fn locate(&self, key: u64, cookie: u32) -> Result<Location> {
        let volume = self.files.vid;
        let entry = *self.state.map.get(key).ok_or(Error::NotFound { volume, key })?;
        if entry.is_tombstone() {
            return Err(Error::Deleted { volume, key });
        }
        let version = self.state.super_block.version;
        let mut head = [0u8; DATA_OFFSET as usize];
        // The data length follows the header only in versions 2 and 3, and only in a
        // non-empty body; a size-0 record at the end of `.dat` may be shorter than 20 bytes.
        let head_len = if version >= 2 && entry.size > 0 { head.len() } else { HEADER_SIZE };
        self.pread(&mut head[..head_len], entry.offset)?;
        let header = Header::parse(&head)?;
        let corrupt =
            |why: String| Error::CorruptNeedle(format!("volume {volume} needle {key:#x}: {why}"));
        if header.key != key {
            return Err(corrupt(format!("offset {} holds needle {:#x}", entry.offset, header.key)));
        }
        if header.cookie != cookie {
            return Err(Error::NotFound { volume, key });
        }
        if header.size != entry.size {
            if header.size == 0 {
                return Err(Error::Deleted { volume, key });
            }
            return Err(corrupt(format!(
                "record size {} but .idx says {}",
                header.size, entry.size
            )));
        }
        // An empty upload is a live size-0 record (the volume server answers it with 200 and
        // no bytes); deletions were told apart above by their `.idx` entry.
        let (data_offset, data_size) = match (version, header.size) {
            (_, 0) => (entry.offset + HEADER_SIZE as u64, 0),
            (1, size) => (entry.offset + HEADER_SIZE as u64, size),
            (_, size) => {
                let data_size = u32::from_be_bytes([head[16], head[17], head[18], head[19]]);
                // The data length, the data and the flags byte must fit in the body.
                if u64::from(data_size) + 5 > u64::from(size) {
                    return Err(corrupt(format!(
                        "data size {data_size} does not fit a body of {size}"
                    )));
                }
                (entry.offset + DATA_OFFSET, data_size)
            }
        };
        Ok(Location {
            key,
            cookie,
            offset: entry.offset,
            size: header.size,
            data_offset,
            data_size,
            generation: self.state.generation,
        })
    }

    /// Reads exactly `buf.len()` bytes of the needle's data, starting `offset` bytes in.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] for a range not inside `[0, data_size)`; [`Error::StaleLocation`]
    /// for a location from before a re-open or from another volume; [`Error::Io`].
    pub fn read_data(&self, loc: &Location, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_location(loc)?;
        check_range(loc, offset, buf.len())?;
        self.pread(buf, loc.data_offset + offset)
    }

    /// Reads a located needle's flags byte and stored CRC, which lie after its data.
    ///
    /// # Errors
    /// [`Error::StaleLocation`] for a location from before a re-open or from another
    /// volume; [`Error::CorruptNeedle`] when the record runs past the end of `.dat`;
    /// [`Error::Io`].
    pub fn read_meta(&self, loc: &Location) -> Result<NeedleMeta> {
        self.check_location(loc)?;
        let crc_at = loc.offset + HEADER_SIZE as u64 + u64::from(loc.size);
        let mut crc = [0u8; CHECKSUM_SIZE];
        // Since version 2 a non-empty body is: data length, data, flags byte, optional fields.
        if self.state.super_block.version < 2 || loc.size == 0 {
            self.pread(&mut crc, crc_at)?;
            return Ok(NeedleMeta { flags: 0, crc: u32::from_be_bytes(crc) });
        }
        let flags_at = loc.data_offset + u64::from(loc.data_size);
        // Between the two lie only the optional fields, usually a few dozen bytes (a name, a
        // MIME type, times): then one read covers both.
        let span = (crc_at + CHECKSUM_SIZE as u64).checked_sub(flags_at);
        let mut buf = [0u8; META_READ_MAX];
        match span.and_then(|n| usize::try_from(n).ok()) {
            Some(n @ 5..=META_READ_MAX) => {
                self.pread(&mut buf[..n], flags_at)?;
                crc.copy_from_slice(&buf[n - CHECKSUM_SIZE..n]);
            }
            _ => {
                self.pread(&mut buf[..1], flags_at)?;
                self.pread(&mut crc, crc_at)?;
            }
        }
        Ok(NeedleMeta { flags: buf[0], crc: u32::from_be_bytes(crc) })
    }

    /// Locates a needle and reads `len` bytes of its data from `offset`, checking the range
    /// before allocating anything.
    ///
    /// # Errors
    /// As [`Volume::locate`] and [`Volume::read_data`].
    pub fn read_range(&self, key: u64, cookie: u32, offset: u64, len: usize) -> Result<Vec<u8>> {
        let loc = self.locate(key, cookie)?;
        check_range(&loc, offset, len)?;
        let mut buf = vec![0u8; len];
        self.read_data(&loc, offset, &mut buf)?;
        Ok(buf)
    }

    /// Reads a located needle's record: header, body and tail, without the padding.
    ///
    /// # Errors
    /// As [`Volume::read_data`].
    pub fn read_record(&self, loc: &Location) -> Result<Vec<u8>> {
        self.check_location(loc)?;
        let tail = needle::tail_len(self.state.super_block.version)?;
        let mut record = vec![0u8; HEADER_SIZE + loc.size as usize + tail];
        self.pread(&mut record, loc.offset)?;
        Ok(record)
    }

    /// Reads a needle's whole record (parse it with [`Needle::parse`] and
    /// [`Volume::super_block`]'s version).
    ///
    /// # Errors
    /// As [`Volume::locate`] and [`Volume::read_record`].
    pub fn read_needle(&self, key: u64, cookie: u32) -> Result<Vec<u8>> {
        self.read_record(&self.locate(key, cookie)?)
    }

    /// Reads a needle, parses it, checks its CRC and returns its data (as stored: compressed
    /// data stays compressed).
    ///
    /// # Errors
    /// As [`Volume::read_needle`], plus [`Error::CorruptNeedle`] and [`Error::CrcMismatch`].
    pub fn read_verified_data(&self, key: u64, cookie: u32) -> Result<Vec<u8>> {
        let record = self.read_needle(key, cookie)?;
        let needle = Needle::parse(&record, self.state.super_block.version)?;
        needle.verify_crc()?;
        Ok(needle.data.to_vec())
    }

    fn check_location(&self, loc: &Location) -> Result<()> {
        if loc.generation == self.state.generation {
            Ok(())
        } else {
            Err(Error::StaleLocation { volume: self.files.vid })
        }
    }

    /// Positioned read from `.dat`; running past its end means the index pointed wrong.
    fn pread(&self, buf: &mut [u8], at: u64) -> Result<()> {
        read_exact_at(&self.state.dat, buf, at).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::CorruptNeedle(format!(
                "volume {}: {} bytes at offset {at} run past the end of {}",
                self.files.vid,
                buf.len(),
                self.files.dat.display()
            )),
            _ => Error::io(&self.files.dat, e),
        })
    }
}

impl State {
    fn open(files: &VolumeFiles) -> Result<State> {
        for _ in 0..OPEN_ATTEMPTS {
            let dat = File::open(&files.dat).map_err(|e| Error::io(&files.dat, e))?;
            let idx = File::open(&files.idx).map_err(|e| Error::io(&files.idx, e))?;
            let dat_inode = inode(&dat, &files.dat)?;
            let idx_inode = inode(&idx, &files.idx)?;
            // A vacuum commits by renaming the new files over the old ones, one after the
            // other; if that happened between the two opens, the pair does not belong together.
            if inode_of(&files.dat)? != dat_inode || inode_of(&files.idx)? != idx_inode {
                continue;
            }
            let mut state = State {
                super_block: SuperBlock::read(&dat, &files.dat)?,
                layout: files::index_layout(&files.vif())?,
                dat,
                idx,
                dat_inode,
                idx_inode,
                map: NeedleMap::default(),
                idx_applied: 0,
                generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            };
            state.apply_new_entries(files)?;
            return Ok(state);
        }
        Err(Error::io(
            &files.dat,
            io::Error::other("volume files kept being replaced while opening"),
        ))
    }

    /// Applies the whole `.idx` entries past `idx_applied`; `None` when `.idx` is shorter
    /// than what was already applied.
    fn apply_new_entries(&mut self, files: &VolumeFiles) -> Result<Option<usize>> {
        let len = self.idx.metadata().map_err(|e| Error::io(&files.idx, e))?.len();
        if len < self.idx_applied {
            return Ok(None);
        }
        let entry = self.layout.entry_size() as u64;
        // A trailing partial entry is still being written; it is read once it is whole.
        let end = self.idx_applied + (len - self.idx_applied) / entry * entry;
        let mut applied = 0;
        let mut buf = Vec::new();
        while self.idx_applied < end {
            let n = (end - self.idx_applied).min(INDEX_READ_CHUNK);
            buf.resize(n as usize, 0);
            self.idx
                .read_exact_at(&mut buf, self.idx_applied)
                .map_err(|e| Error::io(&files.idx, e))?;
            applied += self.map.apply(&buf, self.layout);
            self.idx_applied += n;
        }
        Ok(Some(applied))
    }
}

fn check_range(loc: &Location, offset: u64, len: usize) -> Result<()> {
    let limit = u64::from(loc.data_size);
    let size = len as u64;
    match offset.checked_add(size) {
        Some(end) if end <= limit => Ok(()),
        _ => Err(Error::OutOfBounds { offset, size, limit }),
    }
}

fn inode(file: &File, path: &Path) -> Result<(u64, u64)> {
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    Ok((meta.dev(), meta.ino()))
}

fn inode_of(path: &Path) -> Result<(u64, u64)> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    Ok((meta.dev(), meta.ino()))
}
