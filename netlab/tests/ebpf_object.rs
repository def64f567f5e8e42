//! The built eBPF object against `netlab_common::names`: the maps and
//! programs user space opens by name are exactly those the object has.
//! Parsed with aya's own object parser, so no root is needed.

use std::collections::BTreeSet;

use netlab_common::names;

fn object() -> aya_obj::Object {
    assert!(
        !netlab::dataplane::EBPF_OBJECT.is_empty(),
        "netlab was built without its eBPF object (AYA_BUILD_SKIP)"
    );
    aya_obj::Object::parse(netlab::dataplane::EBPF_OBJECT).expect("parsing the eBPF object")
}

#[test]
fn the_object_has_exactly_the_named_maps() {
    let have: BTreeSet<String> = object()
        .maps
        .keys()
        // Data sections (`.rodata`, `.bss`, …) become maps of their own.
        .filter(|name| !name.starts_with('.'))
        .cloned()
        .collect();
    let want: BTreeSet<String> = names::MAPS.iter().map(|s| s.to_string()).collect();
    assert_eq!(have, want);
}

#[test]
fn the_object_has_exactly_the_named_programs() {
    let have: BTreeSet<String> = object().programs.keys().cloned().collect();
    let want: BTreeSet<String> = names::PROGRAMS.iter().map(|s| s.to_string()).collect();
    assert_eq!(have, want);
}
