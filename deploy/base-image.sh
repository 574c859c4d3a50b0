#!/usr/bin/env bash
# Build a local stand-in for `python:3.11-slim` from Debian packages, without Docker Hub.
#
# BentoML's generated Dockerfile starts `FROM python:3.11-slim`.  Where no image registry can be
# reached, buildah resolves that name from its local storage first, so we build an image with the
# same name from Debian bookworm (whose python3 is 3.11) and tag it
# docker.io/library/python:3.11-slim.  What the generated Dockerfile needs from its base:
#   - apt-get + Debian sources       (it runs `apt-get update && apt-get install ca-certificates ...`)
#   - groupadd/useradd (passwd)      (it creates the `bentoml` user)
#   - uv >= 0.13.4 on PATH           (else it runs `pip install uv`, which Debian's PEP 668 pip refuses)
#   - a python3.11 that uv can find  (`uv venv --python 3.11 /app/.venv`)
#   - bash                           (the entrypoint is a bash script)
#   - optionally an extra CA bundle  (uv downloads wheels over HTTPS during the build)
#
# Usually called by deploy/container.sh; can run alone.  Run `deploy/base-image.sh --help`.
set -euo pipefail

BASE_TAG=${BASE_TAG:-docker.io/library/python:3.11-slim}
SUITE=bookworm                      # Debian 12: python3 is 3.11, as the project requires
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
UV_VERSION=0.13.4                   # the version BentoML 1.4.40's Dockerfile checks for (>= 0.13.4)
RECIPE=3                            # bump when this script changes what goes into the image
PYTHON=${PYTHON:-python3}           # a host python with pip, to download the uv wheel
CA_BUNDLE=auto
REBUILD=0

usage() {
    cat <<EOF
Usage: deploy/base-image.sh [--ca-bundle PATH|auto|none] [--rebuild]

Builds $BASE_TAG in buildah's local storage from Debian $SUITE (debootstrap),
with python3.11, python3-venv, python3-pip, bash, ca-certificates and uv $UV_VERSION.
Skipped when the image already exists and was built from the same inputs, unless --rebuild.

  --ca-bundle PATH   extra CA certificates (PEM) trusted inside the image, e.g. a TLS-intercepting
                     proxy's; 'auto' (default): /etc/ssl/certs/ca-certificates.crt if it exists;
                     'none': only Debian's CAs
  --rebuild          build even if the image exists

Environment: CONTAINERS_STORAGE_CONF (buildah storage; default: the vfs one deploy/container.sh
uses, under DEPLOY_STATE_DIR=/var/tmp/thermo-digits-deploy),
PYTHON (host python with pip, default python3), DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR, BASE_TAG.
EOF
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --ca-bundle) CA_BUNDLE=${2:?--ca-bundle needs a value}; shift 2 ;;
        --rebuild) REBUILD=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "base-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { printf '[base-image] %s\n' "$*" >&2; }

[[ $(id -u) -eq 0 ]] || { log "needs root (debootstrap and buildah's chroot isolation)"; exit 1; }
for tool in buildah debootstrap; do
    command -v "$tool" >/dev/null || { log "$tool is missing: apt-get install buildah debootstrap"; exit 1; }
done

# Alone, use the same buildah storage as deploy/container.sh (vfs: no overlayfs or fuse needed).
if [[ -z ${CONTAINERS_STORAGE_CONF:-} ]]; then
    state_dir=${DEPLOY_STATE_DIR:-/var/tmp/thermo-digits-deploy}
    mkdir -p "$state_dir"
    cat >"$state_dir/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$state_dir/storage"
runroot = "/run/thermo-digits-containers"
EOF
    export CONTAINERS_STORAGE_CONF=$state_dir/storage.conf
fi
export BUILDAH_ISOLATION=chroot

if [[ $CA_BUNDLE == auto ]]; then
    CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
    [[ -f $CA_BUNDLE ]] || CA_BUNDLE=none
fi
if [[ $CA_BUNDLE != none && ! -f $CA_BUNDLE ]]; then
    log "--ca-bundle $CA_BUNDLE: no such file"; exit 1
fi

# A fingerprint of what went into the image, stored as a label: a cached base built with another
# CA bundle or uv version is rebuilt instead of silently reused.
ca_sum=none
[[ $CA_BUNDLE == none ]] || ca_sum=$(sha256sum "$CA_BUNDLE" | cut -c1-16)
inputs="recipe=$RECIPE suite=$SUITE uv=$UV_VERSION ca=$ca_sum"

if [[ $REBUILD -eq 0 ]] && buildah inspect --type image "$BASE_TAG" >/dev/null 2>&1; then
    have=$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "org.thermo-digits.base-inputs"}}' "$BASE_TAG" 2>/dev/null || true)
    if [[ $have == "$inputs" ]]; then
        log "$BASE_TAG already built ($inputs); --rebuild to build it again"
        exit 0
    fi
    log "$BASE_TAG exists but was built from '${have:-unknown inputs}', not '$inputs': rebuilding"
fi

started=$(date +%s)
work=$(mktemp -d /tmp/thermo-digits-base.XXXXXX)
ctr=""
cleanup() {
    # Leave no half-built working container or mount behind on failure.
    if [[ -n $ctr ]]; then
        buildah umount "$ctr" >/dev/null 2>&1 || true
        buildah rm "$ctr" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# uv: fetched on the host with the host's pip (its index and CA settings), installed offline below.
log "downloading uv==$UV_VERSION (wheel)"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "uv==$UV_VERSION"
uv_wheel=$(ls "$work"/uv-"$UV_VERSION"-*.whl)

# Debootstrap straight into a scratch container's root: with the vfs driver the mount point is a
# plain directory, so no tarball import is needed.
ctr=$(buildah from scratch)
root=$(buildah mount "$ctr")
log "debootstrap $SUITE (minbase) into $root from $MIRROR"
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates,bash \
    "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }

# The same apt sources as Debian's own images: main, updates and security.
cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF

# What makes debian:bookworm-slim (python:3.11-slim's base) slim; without it every later
# `apt-get install` in the Bento's Dockerfile leaves its .deb files (~170 MB for build-essential),
# plain-text package lists, docs, man pages and translations in the image.
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
cat >"$root/etc/apt/apt.conf.d/docker-gzip-indexes" <<'EOF'
Acquire::GzipIndexes "true";
EOF
cat >"$root/etc/apt/apt.conf.d/docker-no-languages" <<'EOF'
Acquire::Languages "none";
EOF
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
EOF
# ...and drop what debootstrap already installed there, as debuerreotype's slimify does.
find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
for d in info man groff linda lintian locale; do
    if [[ -d $root/usr/share/$d ]]; then find "$root/usr/share/$d" -mindepth 1 -delete; fi
done

if [[ $CA_BUNDLE != none ]]; then
    # update-ca-certificates (run here, and again whenever the build reinstalls ca-certificates)
    # merges files from /usr/local/share/ca-certificates into /etc/ssl/certs/ca-certificates.crt.
    install -m 0644 "$CA_BUNDLE" "$root/usr/local/share/ca-certificates/deploy-extra-ca.crt"
fi
install -m 0644 "$uv_wheel" "$root/tmp/"

# Image config like python:3.11-slim's, plus two build settings inherited by the Bento image:
#  - SSL_CERT_FILE: uv otherwise trusts only its built-in roots; this makes it use the system
#    bundle, so the extra CA applies to the build's downloads.
#  - UV_NO_CACHE: without BuildKit (buildah) BentoML's Dockerfile gets no cache mount for
#    /root/.cache, and uv's cache would be committed into the image (mostly hard links to the
#    venv's files, so it costs ~20 MB, but it is clutter).
buildah config \
    --env LANG=C.UTF-8 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --env UV_NO_CACHE=1 \
    --cmd python3 \
    --label "org.thermo-digits.base-inputs=$inputs" \
    "$ctr"

# The rest runs inside the image, with buildah providing /proc, /dev and DNS.
log "installing security updates and uv $UV_VERSION inside the image"
buildah run --isolation chroot --network host "$ctr" -- /bin/bash -euc "
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get upgrade -qq -y -o Dpkg::Use-Pty=0 >/tmp/upgrade.log 2>&1 || { tail -n 30 /tmp/upgrade.log; exit 1; }
    rm -f /tmp/upgrade.log
    update-ca-certificates >/dev/null
    # Debian's pip refuses system-wide installs (PEP 668); uv is a standalone binary, so that is safe.
    python3 -m pip install --quiet --root-user-action=ignore --no-cache-dir --no-index \
        --break-system-packages /tmp/$(basename "$uv_wheel")
    rm -f /tmp/*.whl
    # Where python:3.11-slim has its interpreter.
    ln -sf /usr/bin/python3 /usr/local/bin/python3
    ln -sf /usr/bin/python3 /usr/local/bin/python
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log
    echo \"\$(python --version), \$(uv --version)\"
" 2>&1 | sed 's/^/[base-image]   /' >&2

buildah umount "$ctr" >/dev/null
buildah commit --quiet --rm "$ctr" "$BASE_TAG" >/dev/null
ctr=""
log "built $BASE_TAG ($inputs) in $(( $(date +%s) - started )) s"
