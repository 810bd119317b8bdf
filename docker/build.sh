#!/bin/sh
# Builds the Synod image: a static `synod` binary in an image `FROM scratch`.
#
#   docker/build.sh            # tags synod:latest
#   docker/build.sh synod:v1   # or any tag; SYNOD_IMAGE=... works too
#
# Idempotent: cargo rebuilds only what changed and docker reuses its layer cache, so a
# second run with no source change takes seconds.
#
# Why a static glibc binary: the Docker engine we target can pull no base image, so the
# image has no libc to link against, and no musl target is available to build with. The
# explicit --target keeps +crt-static away from build scripts and proc-macros (which must
# stay dynamic, since they load into the compiler), and the separate target directory keeps
# these flags from invalidating the normal `cargo build` cache.
#
# A static glibc still resolves host names, which the nodes need (they find each other as
# synod1, synod2, synod3 through Docker's DNS): since glibc 2.34 the `files` and `dns` NSS
# modules are part of libc itself, and a scratch image has no /etc/nsswitch.conf, so glibc
# uses its default, `dns files`, and loads no libnss_*.so. With an older glibc on the build
# machine that breaks; crates/synod/tests/docker.rs would catch it (no node gets ready).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
image=${1:-${SYNOD_IMAGE:-synod:latest}}
target=x86_64-unknown-linux-gnu
target_dir=$repo/target/static
binary=$target_dir/$target/release/synod
# The Docker build context is the repository root, but .dockerignore lets only this
# directory through, so the context sent to the daemon is the binary and nothing else.
stage=$repo/target/docker

step() { printf '==> %s\n' "$*"; }

command -v docker >/dev/null 2>&1 || { echo "docker/build.sh: docker is not on PATH" >&2; exit 1; }
# Under `cargo test`, $CARGO is the cargo running the test: build with the same toolchain.
cargo=${CARGO:-cargo}
command -v "$cargo" >/dev/null 2>&1 || { echo "docker/build.sh: cargo is not on PATH" >&2; exit 1; }

step "building a static synod for $target (cargo, into target/static)"
started=$(date +%s)
# No debug info: backtraces keep function names (symbols are not stripped) and the binary
# shrinks from about 54 MB to 12 MB.
RUSTFLAGS="-C target-feature=+crt-static" \
CARGO_PROFILE_RELEASE_DEBUG=false \
    "$cargo" build --release -p synod --target "$target" --target-dir "$target_dir" \
        --manifest-path "$repo/Cargo.toml"
step "cargo finished in $(( $(date +%s) - started ))s"

# A dynamically linked binary would build an image that cannot start ("no such file or
# directory" from the missing loader), so refuse it here, where the reason is clear.
if command -v file >/dev/null 2>&1; then
    case $(file -b "$binary") in
        *"statically linked"*|*"static-pie linked"*) ;;
        *) echo "docker/build.sh: $binary is not statically linked: $(file -b "$binary")" >&2; exit 1 ;;
    esac
else
    case $(ldd "$binary" 2>&1 || true) in
        *"statically linked"*|*"not a dynamic executable"*) ;;
        *) echo "docker/build.sh: $binary is dynamically linked: $(ldd "$binary" 2>&1)" >&2; exit 1 ;;
    esac
fi

step "staging the image's files in target/docker"
rm -rf "$stage"
mkdir -p "$stage/data"
cp "$binary" "$stage/synod"

step "docker build -t $image"
# The context is the repository root (the Dockerfile's COPY paths are relative to it).
docker build --tag "$image" --file "$repo/Dockerfile" "$repo"

step "built $image ($(docker image inspect --format '{{.Size}}' "$image" | awk '{ printf "%.1f MB", $1 / 1e6 }'))"
if [ "$image" = synod:latest ]; then env=; else env="SYNOD_IMAGE=$image "; fi
step "start a three-node cluster with: ${env}docker compose up -d   (Compose v1: docker-compose up -d)"
