//! `FileChunkManifest`, the protobuf a chunk-manifest needle holds once it has been
//! decrypted and decompressed. Field numbers follow SeaweedFS's `filer.proto`; prost's
//! derive decodes it without a protoc step.

use prost::Message;

use crate::error::Result;

/// `filer_pb.FileId`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoFileId {
    /// Volume id.
    #[prost(uint32, tag = "1")]
    pub volume_id: u32,
    /// Needle key.
    #[prost(uint64, tag = "2")]
    pub file_key: u64,
    /// Cookie.
    #[prost(fixed32, tag = "3")]
    pub cookie: u32,
}

/// `filer_pb.FileChunk`, the fields a reader needs.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoChunk {
    /// Text file id (older entries fill only this, newer ones `fid`).
    #[prost(string, tag = "1")]
    pub file_id: String,
    /// Offset of the chunk in the file.
    #[prost(int64, tag = "2")]
    pub offset: i64,
    /// Length of the chunk's (decoded) data.
    #[prost(uint64, tag = "3")]
    pub size: u64,
    /// Write time; the newest chunk wins where chunks overlap.
    #[prost(int64, tag = "4")]
    pub modified_ts_ns: i64,
    /// ETag as the filer recorded it.
    #[prost(string, tag = "5")]
    pub e_tag: String,
    /// Structured file id.
    #[prost(message, optional, tag = "7")]
    pub fid: Option<ProtoFileId>,
    /// AES-256-GCM key, empty when the chunk is not encrypted.
    #[prost(bytes = "vec", tag = "9")]
    pub cipher_key: Vec<u8>,
    /// The stored bytes are gzip or zstd compressed.
    #[prost(bool, tag = "10")]
    pub is_compressed: bool,
    /// The chunk's content is itself a `FileChunkManifest`.
    #[prost(bool, tag = "11")]
    pub is_chunk_manifest: bool,
}

/// `filer_pb.FileChunkManifest`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoManifest {
    /// The chunks this manifest stands for.
    #[prost(message, repeated, tag = "1")]
    pub chunks: Vec<ProtoChunk>,
}

impl ProtoChunk {
    /// The chunk's file id in text form, preferring the structured field.
    pub fn file_id_text(&self) -> String {
        match &self.fid {
            Some(f) => crate::fid::FileId::new(f.volume_id, f.file_key, f.cookie).to_string(),
            None => self.file_id.clone(),
        }
    }
}

/// `filer_pb.GetFilerConfigurationResponse`, of which a client needs the masters.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoFilerConfiguration {
    /// Master addresses, as the filer was told them.
    #[prost(string, repeated, tag = "1")]
    pub masters: Vec<String>,
}

/// Decodes a `GetFilerConfigurationResponse`.
///
/// # Errors
/// [`crate::Error::BadManifest`] when the bytes do not decode.
pub fn decode_filer_configuration(blob: &[u8]) -> Result<ProtoFilerConfiguration> {
    Ok(ProtoFilerConfiguration::decode(blob)?)
}

/// Decodes a manifest blob.
///
/// # Errors
/// [`crate::Error::BadManifest`] when the bytes are not a valid `FileChunkManifest`.
pub fn decode(blob: &[u8]) -> Result<ProtoManifest> {
    Ok(ProtoManifest::decode(blob)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips_through_prost() {
        let m = ProtoManifest {
            chunks: vec![ProtoChunk {
                file_id: String::new(),
                offset: 4096,
                size: 10,
                modified_ts_ns: 7,
                e_tag: "abc".into(),
                fid: Some(ProtoFileId { volume_id: 3, file_key: 1, cookie: 0x637037d6 }),
                cipher_key: vec![],
                is_compressed: true,
                is_chunk_manifest: false,
            }],
        };
        let blob = m.encode_to_vec();
        let back = decode(&blob).expect("decodes");
        assert_eq!(back, m);
        assert_eq!(back.chunks[0].file_id_text(), "3,01637037d6");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
    }
}
