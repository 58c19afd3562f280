//! The compressed forms reports arrive in: gzip (RFC 1952) and zip (the first file of the
//! archive, stored or deflated), each inflated at most to a limit.

use std::io::Read;

/// `bytes` inflated from gzip, at most `max` bytes; `None`: not gzip, broken, or bigger.
pub fn gunzip(bytes: &[u8], max: u64) -> Option<Vec<u8>> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return None;
    }
    bounded(flate2::read::GzDecoder::new(bytes), max)
}

fn bounded(r: impl Read, max: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    r.take(max.saturating_add(1)).read_to_end(&mut out).ok()?;
    (out.len() as u64 <= max).then_some(out)
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// The first file of the zip archive `bytes` (through its central directory), inflated at
/// most to `max` bytes; `None`: not zip, broken, encrypted, another method, or bigger.
pub fn unzip_first(bytes: &[u8], max: u64) -> Option<Vec<u8>> {
    if !bytes.starts_with(b"PK\x03\x04") {
        return None;
    }
    // The end of central directory record: 22 bytes plus a comment of at most 65535.
    let from = bytes.len().saturating_sub(22 + 65535);
    let eocd = (from..bytes.len().saturating_sub(21)).rev().find(|&i| bytes[i..].starts_with(b"PK\x05\x06"))?;
    let mut at = u32_at(bytes, eocd + 16)?;
    let entries = u16_at(bytes, eocd + 10)?;
    for _ in 0..entries {
        if !bytes.get(at..)?.starts_with(b"PK\x01\x02") {
            return None;
        }
        let flags = u16_at(bytes, at + 8)?;
        let method = u16_at(bytes, at + 10)?;
        let compressed_size = u32_at(bytes, at + 20)?;
        let size = u32_at(bytes, at + 24)?;
        let name_len = u16_at(bytes, at + 28)?;
        let skip = name_len + u16_at(bytes, at + 30)? + u16_at(bytes, at + 32)?;
        let local = u32_at(bytes, at + 42)?;
        let name = bytes.get(at + 46..at + 46 + name_len)?;
        at += 46 + skip;
        if name.ends_with(b"/") {
            continue; // a directory
        }
        if flags & 1 != 0 || size as u64 > max {
            return None; // encrypted, or bigger than we read
        }
        if !bytes.get(local..)?.starts_with(b"PK\x03\x04") {
            return None;
        }
        let data = local + 30 + u16_at(bytes, local + 26)? + u16_at(bytes, local + 28)?;
        let compressed = bytes.get(data..data.checked_add(compressed_size)?)?;
        return match method {
            0 => bounded(compressed, max),
            8 => bounded(flate2::read::DeflateDecoder::new(compressed), max),
            _ => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_bounded() {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&[b'a'; 1000]).unwrap();
        let gz = e.finish().unwrap();
        assert_eq!(gunzip(&gz, 1000).unwrap().len(), 1000);
        assert_eq!(gunzip(&gz, 999), None, "past the limit");
        assert_eq!(gunzip(b"plain", 1000), None);
        assert_eq!(gunzip(&gz[..gz.len() / 2], 1000), None, "truncated");
    }

    /// A zip archive written by Python's `zipfile` (deflated, one file `r.xml`).
    #[test]
    fn zip_from_python() {
        if std::process::Command::new("python3").arg("--version").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "python3 missing");
            return;
        }
        let script = "import zipfile,io,sys\nb=io.BytesIO()\nz=zipfile.ZipFile(b,'w',zipfile.ZIP_DEFLATED)\n\
                      z.writestr('dir/',b'')\nz.writestr('r.xml',b'<feedback>'+b'x'*5000+b'</feedback>')\nz.close()\n\
                      sys.stdout.buffer.write(b.getvalue())";
        let out = std::process::Command::new("python3").args(["-c", script]).output().unwrap();
        assert!(out.status.success());
        let xml = unzip_first(&out.stdout, 1 << 20).unwrap();
        assert!(xml.starts_with(b"<feedback>") && xml.len() == 5021);
        assert_eq!(unzip_first(&out.stdout, 100), None, "past the limit");
        assert_eq!(unzip_first(&out.stdout[..out.stdout.len() - 30], 1 << 20), None, "truncated");
        assert_eq!(unzip_first(b"PK\x03\x04", 10), None);
    }
}
