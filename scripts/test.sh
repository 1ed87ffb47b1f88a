#!/usr/bin/env bash
# The project's whole test suite, runnable on a fresh machine: installs what
# the tests need, then checks formatting, lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "error: cargo is not installed; install the Rust stable toolchain first" >&2
    exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# The vhost-user tests start qemu-storage-daemon (Debian's qemu-utils); the
# guest kernel's tests (xtask/tests/guest.rs) boot it in qemu-system-x86_64.
# Without them the tests fail, never skip: install what is missing.
missing=()
command -v qemu-storage-daemon >/dev/null || missing+=(qemu-utils)
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update
    $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== guest kernel: fmt, clippy (its own workspace)"
cargo fmt --manifest-path guest/Cargo.toml -- --check
cargo clippy --manifest-path guest/Cargo.toml -- -D warnings
echo "== cargo xtask kerla (the kext inside the real Kerla: build, boot, host-side disk check)"
cargo xtask kerla
echo "== cargo test"
cargo test --workspace
echo "== loom: the rings' publish/notify/re-arm protocol, model-checked (bounded, about a minute)"
# Its own target dir and profile: --cfg loom must not invalidate the main build.
RUSTFLAGS="--cfg loom" cargo test --profile loom -p virtio-blk-mq --lib --target-dir target/loom loom_model
echo "== cargo test --benches (each criterion bench runs once, as a test)"
cargo test --benches
echo "== cargo test (vhost-user, against qemu-storage-daemon)"
cargo test --features vhost-user --lib --test vhost_user
