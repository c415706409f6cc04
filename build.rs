//! Checks that a vendored `protoc` exists for this host: the etcd client's
//! build runs it through `scripts/protoc` (see `.cargo/config.toml`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Err(e) = protoc_bin_vendored::protoc_bin_path() {
        println!(
            "cargo:warning=no vendored protoc for this host ({e}); scripts/protoc falls back to /usr/bin/protoc"
        );
    }
}
