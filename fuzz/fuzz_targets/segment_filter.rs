#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::segment_filter::check(data));
