//! Frames through the eBPF programs via BPF_PROG_TEST_RUN (needs root).
//! The programs are loaded once per process with fresh maps, which are kept
//! between inputs so flows build up; each input is a short sequence of
//! structured packets (program, Ethernet/IPv4 fields, options, fragments,
//! TCP/UDP/ICMP/ICMP errors quoting earlier packets, ports from the NAT's
//! own pools, flags, payload, truncation), raw frames, and mutations and
//! replays of earlier frames. See `netlab_fuzz::oracle` for what is checked.
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use netlab_fuzz::{craft::Input, oracle::Harness};

static HARNESS: Mutex<Option<Harness>> = Mutex::new(None);

fn harness() -> std::sync::MutexGuard<'static, Option<Harness>> {
    HARNESS.lock().unwrap_or_else(|e| e.into_inner())
}

fuzz_target!(
    init: {
        // Load (and verify) the programs before the first input.
        harness().get_or_insert_with(Harness::new);
    },
    |input: Input| {
        harness().get_or_insert_with(Harness::new).run_input(&input);
    }
);
