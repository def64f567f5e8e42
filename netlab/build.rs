use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../netlab-ebpf");
    let skip =
        std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        // `include_bytes!` needs a file; an empty object makes the loader fail at run time
        // with a clear message instead of failing the build.
        let out_dir = std::env::var("OUT_DIR").context("OUT_DIR not set")?;
        std::fs::write(format!("{out_dir}/netlab"), []).context("writing the eBPF stub")?;
    }
    aya_build::build_ebpf(
        [Package {
            name: "netlab-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
