//! The checks of the fuzz targets in `fuzz/` (cargo-fuzz, nightly), in a stable crate so that
//! the committed seed corpus (`fuzz/corpus/<target>/`) runs through exactly the same checks as
//! an ordinary `cargo test` (see `tests/corpus.rs`), without nightly.
//!
//! Each module has one `check(data: &[u8])` that feeds arbitrary bytes to one public API and
//! panics when a property that correct code has does not hold; a panic is what libFuzzer
//! reports as a crash. The fuzz targets are one line each: `fuzz_target!(|d| check(d))`.
//!
//! | target | module | API |
//! |---|---|---|
//! | `csv_source` | [`csv_source`] | `sources::CsvSource` through `ModelSource` |
//! | `jsonl_source` | [`jsonl_source`] | `sources::JsonlSource` through `ModelSource` |
//! | `segment_filter` | [`segment_filter`] | `sync_core::segment::Filter` |
//! | `config` | [`config`] | `runner::config::Project::parse` |
//! | `normalize` | [`normalize`] | `sync_core::normalize::{standard, custom}` |

mod chunked;
pub mod config;
pub mod csv_source;
pub mod jsonl_source;
pub mod normalize;
pub mod segment_filter;

/// A target's check: panics when a property fails for this input.
pub type Check = fn(&[u8]);

/// Every target: its name (as in `fuzz/fuzz_targets/` and `fuzz/corpus/`) and its check.
pub const TARGETS: [(&str, Check); 5] = [
    ("csv_source", csv_source::check),
    ("jsonl_source", jsonl_source::check),
    ("segment_filter", segment_filter::check),
    ("config", config::check),
    ("normalize", normalize::check),
];

/// Reads fuzz input bytes one at a time; past the end it yields zeros.
#[derive(Debug)]
pub(crate) struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// A number below `n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n.max(1)
    }

    /// Up to `max` bytes, the count taken from the input.
    pub(crate) fn take(&mut self, max: usize) -> &'a [u8] {
        let n = self.below(max + 1).min(self.data.len());
        let (taken, rest) = self.data.split_at(n);
        self.data = rest;
        taken
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
