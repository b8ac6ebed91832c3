//! An in-memory reader that hands its bytes out a few at a time.

use std::io::{self, Read};

/// Reads `data` in pieces of at most `chunk` bytes (0: all at once), so that records cross
/// the sources' buffer refills at fuzzer-chosen places.
#[derive(Debug)]
pub(crate) struct Chunked {
    data: Vec<u8>,
    at: usize,
    chunk: usize,
}

impl Chunked {
    pub(crate) fn new(data: Vec<u8>, chunk: usize) -> Self {
        Chunked { data, at: 0, chunk }
    }
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.data.get(self.at..).unwrap_or_default();
        let mut n = left.len().min(buf.len());
        if self.chunk > 0 {
            n = n.min(self.chunk);
        }
        if let (Some(to), Some(from)) = (buf.get_mut(..n), left.get(..n)) {
            to.copy_from_slice(from);
        }
        self.at += n;
        Ok(n)
    }
}

/// A chunk size from one input byte: all at once half the time, otherwise 1 to 16 bytes.
pub(crate) fn chunk_size(b: u8) -> usize {
    if b & 0x80 == 0 {
        0
    } else {
        usize::from(b & 0x0f) + 1
    }
}
