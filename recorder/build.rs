//! Builds `recorder-ebpf` for the bpf target with the nightly toolchain (aya-build) and leaves the
//! object in OUT_DIR, where `src/capture/mod.rs` embeds it with `include_bytes_aligned!`.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    // `NATREC_TESTS_NO_ROOT`, set at build time, marks the tests that need root (kernel BTF,
    // netlink, a tmpfs mount) as ignored, so that `cargo test` reports them as such.
    println!("cargo::rerun-if-env-changed=NATREC_TESTS_NO_ROOT");
    println!("cargo::rustc-check-cfg=cfg(natrec_no_root)");
    if std::env::var_os("NATREC_TESTS_NO_ROOT").is_some() {
        println!("cargo::rustc-cfg=natrec_no_root");
    }
    let cargo_metadata::Metadata { packages, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = packages
        .iter()
        .find(|p| p.name.as_str() == "recorder-ebpf")
        .ok_or_else(|| anyhow!("recorder-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            no_default_features: false,
            features: &[],
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF programs (run `cargo xtask setup` if bpf-linker or the nightly's rust-src is missing)")
}
