//! A bounds check of a GGUF header before candle parses it.
//!
//! candle's reader trusts the counts in the file: a string or array length of 2⁶⁰, or a tensor
//! whose dimensions multiply past the file, makes it allocate that much and abort the process.
//! This walk reads the same header with every count checked against the bytes actually left
//! and every tensor's data against the file's end, so a corrupt, truncated or hostile file is
//! a clear error naming what is wrong and where — never a crash.

use std::io::{Read, Seek, SeekFrom};

use crate::LlmError;

const MAGIC: u32 = 0x4655_4747; // "GGUF", little-endian
const MAX_DIMS: u32 = 4;
const DEFAULT_ALIGNMENT: u64 = 32;

struct Walker<'a, R> {
    reader: &'a mut R,
    pos: u64,
    len: u64,
    version: u32,
}

fn bad(what: String) -> LlmError {
    LlmError::BadModel(what)
}

impl<R: Read> Walker<'_, R> {
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], LlmError> {
        let mut buf = [0u8; N];
        self.reader.read_exact(&mut buf).map_err(|_| {
            bad(format!(
                "the file ends inside the header (reading {what} at byte {}); is it truncated?",
                self.pos
            ))
        })?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32, LlmError> {
        Ok(u32::from_le_bytes(self.bytes::<4>(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, LlmError> {
        Ok(u64::from_le_bytes(self.bytes::<8>(what)?))
    }

    /// A count: u32 in GGUF v1, u64 after.
    fn count(&mut self, what: &str) -> Result<u64, LlmError> {
        if self.version == 1 {
            Ok(self.u32(what)? as u64)
        } else {
            self.u64(what)
        }
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), LlmError> {
        if n > self.left() {
            return Err(bad(format!(
                "{what} at byte {} claims {n} bytes but only {} are left in the file",
                self.pos,
                self.left()
            )));
        }
        std::io::copy(&mut self.reader.by_ref().take(n), &mut std::io::sink())
            .map_err(|e| bad(format!("cannot read {what}: {e}")))?;
        self.pos += n;
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String, LlmError> {
        let len = self.count(what)?;
        if len > self.left() {
            return Err(bad(format!(
                "{what} at byte {} claims {len} bytes but only {} are left in the file",
                self.pos,
                self.left()
            )));
        }
        let mut buf = vec![0u8; len as usize];
        self.reader
            .read_exact(&mut buf)
            .map_err(|e| bad(format!("cannot read {what}: {e}")))?;
        self.pos += len;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Skips one metadata value of type `ty`; returns it when it is a u32 (for the alignment).
    fn value(&mut self, ty: u32, key: &str, depth: u8) -> Result<Option<u64>, LlmError> {
        let fixed = |ty: u32| -> Option<u64> {
            Some(match ty {
                0 | 1 | 7 => 1,
                2 | 3 => 2,
                4..=6 => 4,
                10..=12 => 8,
                _ => return None,
            })
        };
        if let Some(size) = fixed(ty) {
            if ty == 4 {
                return Ok(Some(self.u32(key)? as u64));
            }
            self.skip(size, key)?;
            return Ok(None);
        }
        match ty {
            8 => {
                self.string(key)?;
            }
            9 if depth < 2 => {
                let item = self.u32(key)?;
                let count = self.count(key)?;
                match fixed(item) {
                    Some(size) => self.skip(count.saturating_mul(size), key)?,
                    None => {
                        // Every item takes at least 8 bytes (a string's length): bound the loop.
                        if count > self.left() / 8 + 1 {
                            return Err(bad(format!(
                                "metadata {key:?} claims {count} items, more than the file holds"
                            )));
                        }
                        for _ in 0..count {
                            self.value(item, key, depth + 1)?;
                        }
                    }
                }
            }
            _ => {
                return Err(bad(format!(
                    "metadata {key:?} has an unknown value type {ty}"
                )));
            }
        }
        Ok(None)
    }
}

/// (elements per block, bytes per block) of a GGML tensor type id.
fn block_layout(ty: u32) -> Option<(u64, u64)> {
    Some(match ty {
        0 => (1, 4),
        1 | 30 => (1, 2),
        2 => (32, 18),
        3 => (32, 20),
        6 => (32, 22),
        7 => (32, 24),
        8 => (32, 34),
        9 => (32, 36),
        10 => (256, 84),
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        15 => (256, 292),
        _ => return None,
    })
}

/// Opens the GGUF file at `path`: its header checked, then parsed; the reader is left where
/// candle can read tensors from.
pub fn open(
    path: &std::path::Path,
) -> Result<
    (
        candle_core::quantized::gguf_file::Content,
        std::io::BufReader<std::fs::File>,
    ),
    LlmError,
> {
    let file = std::fs::File::open(path).map_err(|source| LlmError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut reader = std::io::BufReader::new(file);
    check_header(&mut reader)
        .map_err(|e| LlmError::BadModel(format!("{}: {e}", path.display())))?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut reader).map_err(|e| {
        LlmError::BadModel(format!(
            "{}: cannot parse the GGUF header: {e}",
            path.display()
        ))
    })?;
    Ok((content, reader))
}

/// Checks the GGUF header of `reader` (from its start) and leaves it at the start again.
pub fn check_header<R: Read + Seek>(reader: &mut R) -> Result<(), LlmError> {
    let io = |e: std::io::Error| bad(format!("cannot read the file: {e}"));
    let len = reader.seek(SeekFrom::End(0)).map_err(io)?;
    reader.seek(SeekFrom::Start(0)).map_err(io)?;
    let result = walk(reader, len);
    reader.seek(SeekFrom::Start(0)).map_err(io)?;
    result
}

fn walk<R: Read>(reader: &mut R, len: u64) -> Result<(), LlmError> {
    let mut w = Walker {
        reader,
        pos: 0,
        len,
        version: 0,
    };
    if w.u32("the magic number")? != MAGIC {
        return Err(bad(
            "not a GGUF file (the magic number is not \"GGUF\")".into()
        ));
    }
    w.version = w.u32("the version")?;
    if !(1..=3).contains(&w.version) {
        return Err(bad(format!(
            "GGUF version {} is not supported (1 to 3 are)",
            w.version
        )));
    }
    let tensors = w.count("the tensor count")?;
    let entries = w.count("the metadata count")?;
    // A metadata entry takes at least 12 bytes, a tensor entry at least 24.
    if entries > w.left() / 12 || tensors > w.left() / 24 {
        return Err(bad(format!(
            "the header claims {entries} metadata entries and {tensors} tensors, more than a {len}-byte file can hold"
        )));
    }
    let mut alignment = DEFAULT_ALIGNMENT;
    for _ in 0..entries {
        let key = w.string("a metadata key")?;
        let ty = w.u32(&key)?;
        if let Some(value) = w.value(ty, &key, 0)?
            && key == "general.alignment"
        {
            if value == 0 || !value.is_power_of_two() {
                return Err(bad(format!(
                    "general.alignment is {value}, not a power of two"
                )));
            }
            alignment = value;
        }
    }
    let mut ends = Vec::with_capacity(tensors as usize);
    for _ in 0..tensors {
        let name = w.string("a tensor name")?;
        let dims = w.u32(&name)?;
        if dims == 0 || dims > MAX_DIMS {
            return Err(bad(format!(
                "tensor {name:?} has {dims} dimensions (1 to {MAX_DIMS} are valid)"
            )));
        }
        let mut elements: u64 = 1;
        for _ in 0..dims {
            let d = if w.version == 1 {
                w.u32(&name)? as u64
            } else {
                w.u64(&name)?
            };
            elements = elements
                .checked_mul(d)
                .ok_or_else(|| bad(format!("tensor {name:?}: its dimensions overflow")))?;
        }
        let ty = w.u32(&name)?;
        let (block, bytes) = block_layout(ty)
            .ok_or_else(|| bad(format!("tensor {name:?} has an unknown type {ty}")))?;
        if !elements.is_multiple_of(block) {
            return Err(bad(format!(
                "tensor {name:?} has {elements} elements, not a whole number of {block}-element blocks of its type"
            )));
        }
        let offset = w.u64(&name)?;
        let size = elements / block * bytes;
        ends.push((name, offset, size));
    }
    let data_start = w.pos.div_ceil(alignment) * alignment;
    for (name, offset, size) in ends {
        let end = data_start
            .checked_add(offset)
            .and_then(|s| s.checked_add(size));
        if end.is_none_or(|end| end > len) {
            return Err(bad(format!(
                "tensor {name:?} ({size} bytes at offset {offset}) runs past the end of the {len}-byte file; is it truncated?"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn header(entries: &[u8], tensors: u64, count: u64) -> Vec<u8> {
        let mut out = MAGIC.to_le_bytes().to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&tensors.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(entries);
        out
    }

    #[test]
    fn the_tiny_model_passes_and_every_truncation_is_an_error() {
        let gguf = crate::testing::tiny_llama_gguf(&Default::default());
        check_header(&mut Cursor::new(&gguf)).unwrap();
        for cut in (0..gguf.len()).step_by(97) {
            let err = check_header(&mut Cursor::new(&gguf[..cut])).unwrap_err();
            assert!(matches!(err, LlmError::BadModel(_)), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn absurd_counts_are_refused_without_allocating_them() {
        // A key claiming 2^60 bytes.
        let mut entry = (1u64 << 60).to_le_bytes().to_vec();
        entry.extend_from_slice(&[0u8; 16]);
        let err = check_header(&mut Cursor::new(header(&entry, 0, 1))).unwrap_err();
        assert!(err.to_string().contains("only"), "{err}");
        // 2^40 metadata entries in a tiny file.
        let err = check_header(&mut Cursor::new(header(&[0u8; 64], 0, 1 << 40))).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        // An array of 2^50 strings.
        let mut entry = 3u64.to_le_bytes().to_vec();
        entry.extend_from_slice(b"key");
        entry.extend_from_slice(&9u32.to_le_bytes());
        entry.extend_from_slice(&8u32.to_le_bytes());
        entry.extend_from_slice(&(1u64 << 50).to_le_bytes());
        entry.extend_from_slice(&[0u8; 32]);
        let err = check_header(&mut Cursor::new(header(&entry, 0, 1))).unwrap_err();
        assert!(err.to_string().contains("items"), "{err}");
        assert!(
            check_header(&mut Cursor::new(b"GGML\x03\0\0\0".to_vec()))
                .unwrap_err()
                .to_string()
                .contains("not a GGUF file")
        );
    }
}
