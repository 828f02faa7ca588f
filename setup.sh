#!/usr/bin/env bash
# Installs everything osbuilder and its test suite need on a Debian 12 machine:
# the Debian tools it drives, and a virtualenv in .venv with the package installed.
# Safe to re-run; it only installs what is missing.
#   ./setup.sh             osbuilder, its tools and the test suite's tools
#   ./setup.sh --runtime   only what osbuilder drives, and the package without the test extras
#   ./setup.sh --packages  print the Debian packages osbuilder drives (the builder container's list)
set -euo pipefail
cd "$(dirname "$0")"

# What osbuilder drives (the builder container installs exactly these: ./setup.sh --packages).
RUNTIME_PACKAGES=(
    mmdebstrap debian-archive-keyring
    e2fsprogs erofs-utils xfsprogs cryptsetup-bin fdisk
    qemu-system-x86 qemu-system-arm qemu-system-ppc qemu-system-misc qemu-user-static binfmt-support arch-test
    binutils-multiarch make busybox-static kmod dmsetup cpio zstd xz-utils lz4 tar xorriso faketime fakeroot attr parted
    libmagic1 file
    apt-utils gpg openssl dnf rpm dracut-core systemd uidmap
)
# What only the test suite and this venv need: local package repositories, test binaries,
# podman for the builder container's test.
TEST_PACKAGES=(createrepo-c gcc libc6-dev python3-venv podman runc)
APT_PACKAGES=("${RUNTIME_PACKAGES[@]}" "${TEST_PACKAGES[@]}")
EXTRAS="[test]"
case "${1:-}" in
    "") ;;
    --packages) echo "${RUNTIME_PACKAGES[*]}"; exit 0 ;;
    --runtime) APT_PACKAGES=("${RUNTIME_PACKAGES[@]}"); EXTRAS="" ;;
    *) echo "setup: unknown option '$1'; use --runtime, --packages or nothing" >&2; exit 2 ;;
esac

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's interpreter by default: every user can read it, so builds also run unprivileged
# from this venv (a python3 earlier on PATH may live in root's home).
PYTHON="${PYTHON:-/usr/bin/python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".$EXTRAS"
echo "setup: ready (.venv/bin/osbuilder)" >&2
