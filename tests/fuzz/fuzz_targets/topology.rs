//! Arbitrary bytes as a topology file: `topology::parse` never panics, and a
//! lab it accepts holds every invariant in `netlab_fuzz::topo` (addresses in
//! their segments and unique, interface names of 15 bytes at most, forwards'
//! ports in 1-65535, …), plans without panicking, converges, and survives a
//! round trip through TOML.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        netlab_fuzz::topo::check_text(text);
    }
});
