//! Shared code of netlab's fuzz targets (see `fuzz_targets/`).

pub mod craft;
pub mod craft6;
pub mod dataplane;
pub mod frames;
pub mod oracle;
pub mod shapes;
pub mod topo;
