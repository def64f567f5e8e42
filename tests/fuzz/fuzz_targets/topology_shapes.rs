//! Structured lab shapes (names, subnets and addresses from small pools that
//! refer to each other) rendered to TOML, through the same checks as the
//! `topology` target: the fuzzer spends its time in validation and
//! planning instead of TOML syntax.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netlab_fuzz::shapes::Shape;

fuzz_target!(|shape: Shape| {
    netlab_fuzz::topo::check_text(&shape.render());
});
