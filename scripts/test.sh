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

# The guest kernel's tests (xtask/tests/guest.rs) boot it in QEMU. Without
# QEMU they fail, never skip: install it when it is missing.
if ! command -v qemu-system-x86_64 >/dev/null; then
    echo "== installing qemu-system-x86 (the guest tests run the kernel in QEMU)"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends qemu-system-x86
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== guest kernel: fmt, clippy (its own workspace)"
cargo fmt --manifest-path guest/Cargo.toml -- --check
cargo clippy --manifest-path guest/Cargo.toml -- -D warnings
echo "== cargo test"
cargo test --workspace
