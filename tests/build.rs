//! The tests' opt-outs: each variable, set to anything at build time, marks the tests that need
//! what it names as ignored, so that `cargo test` reports them as such instead of passing them.
//! - `NATREC_TESTS_NO_ROOT`: root, network namespaces, nftables, conntrack (`natrec_no_root`);
//! - `NATREC_TESTS_NO_END_PROBE`: a kernel with natrec's end probe (`natrec_no_end_probe`);
//! - `NATREC_TESTS_NO_PACKAGE`: installing the .deb on this machine (`natrec_no_package`).

fn main() {
    for (var, cfg) in [
        ("NATREC_TESTS_NO_ROOT", "natrec_no_root"),
        ("NATREC_TESTS_NO_END_PROBE", "natrec_no_end_probe"),
        ("NATREC_TESTS_NO_PACKAGE", "natrec_no_package"),
    ] {
        println!("cargo::rerun-if-env-changed={var}");
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if std::env::var_os(var).is_some() {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
