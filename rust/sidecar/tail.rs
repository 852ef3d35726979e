//! A needle's flags byte and stored CRC, which the DATA answer carries but
//! [`crate::volume::Volume`] does not expose (its reads stop at the end of the data).
//!
//! They are read through a `.dat` handle of this module's own. That handle may belong to
//! other files than the volume's (a vacuum renames new files over the old ones), so the
//! record header at the location is read through it first and must repeat the key, cookie
//! and size that [`Volume::locate`](crate::volume::Volume::locate) found; otherwise the
//! handle is re-opened once, and if it still disagrees the caller refreshes the volume and
//! locates the needle again. The needle's data itself is always read through the volume.
//!
//! Once `Volume` offers this (the bytes after the data are part of the record it already
//! bounds-checks), this module can go.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{PoisonError, RwLock};

use crate::error::{Error, Result};
use crate::needle::{Header, HEADER_SIZE};
use crate::volume::Location;

/// What a DATA answer says about the needle besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct NeedleMeta {
    /// The flags byte (0 for version 1 and for empty bodies).
    pub(crate) flags: u8,
    /// The CRC as stored in the tail.
    pub(crate) crc: u32,
    /// Bytes of data.
    pub(crate) data_size: u32,
}

/// Reads [`NeedleMeta`] for located needles of one volume.
#[derive(Debug)]
pub(crate) struct TailReader {
    dat: PathBuf,
    file: RwLock<Option<File>>,
}

impl TailReader {
    pub(crate) fn new(dat: PathBuf) -> TailReader {
        TailReader { dat, file: RwLock::new(None) }
    }

    /// The needle's metadata, or `None` when the `.dat` on disk no longer holds the
    /// located record (the volume must be refreshed and the needle located again).
    ///
    /// # Errors
    /// [`Error::Io`] when `.dat` cannot be opened or read.
    pub(crate) fn read(&self, version: u8, loc: &Location) -> Result<Option<NeedleMeta>> {
        for attempt in 0..2 {
            {
                let guard = self.file.read().unwrap_or_else(PoisonError::into_inner);
                if let Some(file) = guard.as_ref() {
                    match read_meta(file, version, loc) {
                        Ok(Some(meta)) => return Ok(Some(meta)),
                        Ok(None) => {}
                        Err(e) => return Err(Error::io(&self.dat, e)),
                    }
                }
            }
            if attempt == 0 {
                let file = File::open(&self.dat).map_err(|e| Error::io(&self.dat, e))?;
                *self.file.write().unwrap_or_else(PoisonError::into_inner) = Some(file);
            }
        }
        Ok(None)
    }
}

fn read_meta(file: &File, version: u8, loc: &Location) -> io::Result<Option<NeedleMeta>> {
    let mut head = [0u8; HEADER_SIZE];
    if !read_at(file, &mut head, loc.offset)? {
        return Ok(None);
    }
    let Ok(header) = Header::parse(&head) else { return Ok(None) };
    if (header.key, header.cookie, header.size) != (loc.key, loc.cookie, loc.size) {
        return Ok(None);
    }
    let mut flags = [0u8; 1];
    // Since version 2 a non-empty body is: data size, data, flags byte, optional fields.
    if version >= 2
        && loc.size > 0
        && !read_at(file, &mut flags, loc.data_offset + u64::from(loc.data_size))?
    {
        return Ok(None);
    }
    let mut crc = [0u8; 4];
    if !read_at(file, &mut crc, loc.offset + HEADER_SIZE as u64 + u64::from(loc.size))? {
        return Ok(None);
    }
    Ok(Some(NeedleMeta { flags: flags[0], crc: u32::from_be_bytes(crc), data_size: loc.data_size }))
}

/// `false` when the file ends before the bytes do (another, shorter file).
fn read_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<bool> {
    match file.read_exact_at(buf, at) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}
