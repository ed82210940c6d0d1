#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshca_fuzz_targets::data_source(data));
