//! The subset of the ZIP format that `torch.save` archives use: uncompressed ("stored") entries,
//! each record's data aligned to 64 bytes through a padding extra field (as PyTorch's own writer
//! does, so the file can be memory-mapped), CRC-32 checked on read, ZIP64 records understood on
//! read (PyTorch writes them for large archives).

/// Alignment of each record's data, as PyTorch's `PyTorchStreamWriter` uses.
const ALIGN: usize = 64;
/// Header id of the padding extra field PyTorch writes ("FB").
const PAD_FIELD_ID: u16 = 0x4246;

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD64_SIG: u32 = 0x0606_4b50;
const EOCD64_LOCATOR_SIG: u32 = 0x0706_4b50;

/// Writes a stored ZIP archive record by record.
pub(super) struct ZipWriter<W: std::io::Write> {
    out: W,
    offset: u64,
    central: Vec<u8>,
    entries: u64,
}

impl<W: std::io::Write> ZipWriter<W> {
    pub(super) fn new(out: W) -> Self {
        ZipWriter { out, offset: 0, central: Vec::new(), entries: 0 }
    }

    /// Appends one record. Sizes above 4 GiB are refused (eda never writes such a record; the
    /// reader handles ZIP64 for archives written by PyTorch).
    pub(super) fn add(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        let too_big = |what: &str| std::io::Error::other(format!("{what} of `{name}` exceeds 4 GiB (ZIP64 not written)"));
        let size = u32::try_from(data.len()).map_err(|_| too_big("size"))?;
        let offset = u32::try_from(self.offset).map_err(|_| too_big("offset"))?;
        let name_len = u16::try_from(name.len()).map_err(|_| std::io::Error::other("record name too long"))?;
        let crc = crc32fast::hash(data);
        // The data starts after the 30-byte header, the name and the extra field; pad the extra
        // field (4-byte field header + filler) so that it lands on a multiple of ALIGN.
        let unpadded = self.offset as usize + 30 + name.len() + 4;
        let filler = (ALIGN - unpadded % ALIGN) % ALIGN;
        let mut extra = Vec::with_capacity(4 + filler);
        extra.extend_from_slice(&PAD_FIELD_ID.to_le_bytes());
        extra.extend_from_slice(&(filler as u16).to_le_bytes());
        extra.resize(4 + filler, b'Z');

        let mut local = Vec::with_capacity(30 + name.len() + extra.len());
        push32(&mut local, LOCAL_SIG);
        push16(&mut local, 20); // version needed: 2.0
        push16(&mut local, 0); // flags
        push16(&mut local, 0); // method: stored
        push16(&mut local, 0); // time
        push16(&mut local, 0x21); // date: 1980-01-01
        push32(&mut local, crc);
        push32(&mut local, size);
        push32(&mut local, size);
        push16(&mut local, name_len);
        push16(&mut local, extra.len() as u16);
        local.extend_from_slice(name.as_bytes());
        local.extend_from_slice(&extra);
        self.out.write_all(&local)?;
        self.out.write_all(data)?;

        push32(&mut self.central, CENTRAL_SIG);
        push16(&mut self.central, 20); // made by
        push16(&mut self.central, 20); // needed
        push16(&mut self.central, 0);
        push16(&mut self.central, 0);
        push16(&mut self.central, 0);
        push16(&mut self.central, 0x21);
        push32(&mut self.central, crc);
        push32(&mut self.central, size);
        push32(&mut self.central, size);
        push16(&mut self.central, name_len);
        push16(&mut self.central, 0); // extra
        push16(&mut self.central, 0); // comment
        push16(&mut self.central, 0); // disk
        push16(&mut self.central, 0); // internal attributes
        push32(&mut self.central, 0); // external attributes
        push32(&mut self.central, offset);
        self.central.extend_from_slice(name.as_bytes());

        self.offset += (local.len() + data.len()) as u64;
        self.entries += 1;
        Ok(())
    }

    /// Writes the central directory and the end record; returns the writer.
    pub(super) fn finish(mut self) -> std::io::Result<W> {
        let entries = u16::try_from(self.entries).map_err(|_| std::io::Error::other("more than 65535 records"))?;
        let cd_offset = u32::try_from(self.offset).map_err(|_| std::io::Error::other("archive exceeds 4 GiB"))?;
        self.out.write_all(&self.central)?;
        let mut end = Vec::with_capacity(22);
        push32(&mut end, EOCD_SIG);
        push16(&mut end, 0);
        push16(&mut end, 0);
        push16(&mut end, entries);
        push16(&mut end, entries);
        push32(&mut end, self.central.len() as u32);
        push32(&mut end, cd_offset);
        push16(&mut end, 0);
        self.out.write_all(&end)?;
        Ok(self.out)
    }
}

fn push16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn push32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// One record of an archive: its name and where its (stored) data lies in the file.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) start: usize,
    pub(super) len: usize,
    crc: u32,
}

/// Reads the central directory of a ZIP archive held in `bytes`. Only stored entries are
/// accepted (PyTorch never compresses). Errors are plain messages; the caller names the file.
pub(super) fn read_entries(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let eocd = find_eocd(bytes).ok_or("not a ZIP archive (no end-of-central-directory record)")?;
    let mut count = u64::from(u16_at(bytes, eocd + 10)?);
    let mut cd_offset = u64::from(u32_at(bytes, eocd + 16)?);
    if cd_offset == u64::from(u32::MAX) || count == u64::from(u16::MAX) {
        // ZIP64: the locator sits just before the classic end record.
        let loc = eocd.checked_sub(20).ok_or("truncated ZIP64 locator")?;
        if u32_at(bytes, loc)? != EOCD64_LOCATOR_SIG {
            return Err("ZIP64 locator missing".into());
        }
        let e64 = usize_of(u64_at(bytes, loc + 8)?)?;
        if u32_at(bytes, e64)? != EOCD64_SIG {
            return Err("ZIP64 end record missing".into());
        }
        count = u64_at(bytes, e64 + 32)?;
        cd_offset = u64_at(bytes, e64 + 48)?;
    }
    let mut pos = usize_of(cd_offset)?;
    let mut out = Vec::new();
    for _ in 0..count {
        if u32_at(bytes, pos)? != CENTRAL_SIG {
            return Err(format!("central directory entry at byte {pos} has a bad signature"));
        }
        let method = u16_at(bytes, pos + 10)?;
        let crc = u32_at(bytes, pos + 16)?;
        let mut csize = u64::from(u32_at(bytes, pos + 20)?);
        let mut usize_ = u64::from(u32_at(bytes, pos + 24)?);
        let name_len = usize::from(u16_at(bytes, pos + 28)?);
        let extra_len = usize::from(u16_at(bytes, pos + 30)?);
        let comment_len = usize::from(u16_at(bytes, pos + 32)?);
        let mut local = u64::from(u32_at(bytes, pos + 42)?);
        let name_bytes = slice(bytes, pos + 46, name_len)?;
        let name = String::from_utf8(name_bytes.to_vec()).map_err(|_| "record name is not UTF-8".to_string())?;
        // ZIP64 extra field: the 64-bit values, in order, of the fields saturated above.
        let extra = slice(bytes, pos + 46 + name_len, extra_len)?;
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = u16::from_le_bytes([extra[e], extra[e + 1]]);
            let len = usize::from(u16::from_le_bytes([extra[e + 2], extra[e + 3]]));
            if id == 1 {
                let mut f = e + 4;
                for v in [&mut usize_, &mut csize, &mut local] {
                    if *v == u64::from(u32::MAX) {
                        *v = u64_at(extra, f)?;
                        f += 8;
                    }
                }
            }
            e += 4 + len;
        }
        if method != 0 {
            return Err(format!("record `{name}` is compressed (method {method}); only stored records are supported"));
        }
        if csize != usize_ {
            return Err(format!("record `{name}` has compressed size {csize} != size {usize_}"));
        }
        let lh = usize_of(local)?;
        if u32_at(bytes, lh)? != LOCAL_SIG {
            return Err(format!("record `{name}`: bad local header signature"));
        }
        let start = lh + 30 + usize::from(u16_at(bytes, lh + 26)?) + usize::from(u16_at(bytes, lh + 28)?);
        let len = usize_of(usize_)?;
        slice(bytes, start, len).map_err(|_| format!("record `{name}` is truncated"))?;
        out.push(Entry { name, start, len, crc });
        pos += 46 + name_len + extra_len + comment_len;
    }
    Ok(out)
}

/// The data of `entry`, CRC-checked.
pub(super) fn entry_data<'a>(bytes: &'a [u8], entry: &Entry) -> Result<&'a [u8], String> {
    let data = slice(bytes, entry.start, entry.len)?;
    if crc32fast::hash(data) != entry.crc {
        return Err(format!("record `{}` fails its CRC-32 check (corrupt file)", entry.name));
    }
    Ok(data)
}

fn find_eocd(bytes: &[u8]) -> Option<usize> {
    let lowest = bytes.len().saturating_sub(22 + usize::from(u16::MAX));
    (lowest..=bytes.len().checked_sub(22)?).rev().find(|&i| bytes[i..i + 4] == EOCD_SIG.to_le_bytes())
}

fn slice(bytes: &[u8], start: usize, len: usize) -> Result<&[u8], String> {
    start.checked_add(len).and_then(|end| bytes.get(start..end)).ok_or_else(|| "truncated archive".to_string())
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    Ok(u16::from_le_bytes(slice(b, at, 2)?.try_into().expect("2 bytes")))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    Ok(u32::from_le_bytes(slice(b, at, 4)?.try_into().expect("4 bytes")))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
    Ok(u64::from_le_bytes(slice(b, at, 8)?.try_into().expect("8 bytes")))
}

fn usize_of(v: u64) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| "offset beyond the address space".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_aligned_and_crc_checked() {
        let mut w = ZipWriter::new(Vec::new());
        w.add("archive/data.pkl", b"pickle").unwrap();
        w.add("archive/data/0", &[1u8; 100]).unwrap();
        let mut bytes = w.finish().unwrap();
        let entries = read_entries(&bytes).unwrap();
        assert_eq!(entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["archive/data.pkl", "archive/data/0"]);
        assert!(entries.iter().all(|e| e.start % ALIGN == 0), "{entries:?}");
        assert_eq!(entry_data(&bytes, &entries[0]).unwrap(), b"pickle");
        assert_eq!(entry_data(&bytes, &entries[1]).unwrap(), &[1u8; 100]);
        bytes[entries[1].start + 5] ^= 0xff;
        assert!(entry_data(&bytes, &entries[1]).unwrap_err().contains("CRC"));
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(read_entries(b"definitely not a zip file at all").is_err());
        let mut w = ZipWriter::new(Vec::new());
        w.add("a/b", &[7u8; 10]).unwrap();
        let bytes = w.finish().unwrap();
        for cut in [1, 10, 40, bytes.len() - 23] {
            assert!(read_entries(&bytes[..bytes.len() - cut]).is_err(), "cut {cut}");
        }
    }
}
