fn main() {
    // The eBPF binaries are linked by bpf-linker: rebuild when it changes
    // (`cargo xtask setup` may install a new one).
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
