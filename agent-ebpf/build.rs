use which::which;

/// Makes cargo rebuild the eBPF object when bpf-linker changes (e.g. after
/// `cargo xtask setup` rebuilt it against a new nightly LLVM).
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
