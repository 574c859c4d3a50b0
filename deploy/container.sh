#!/usr/bin/env bash
# Build the ThermoDigits Bento into an OCI image with buildah, run it and smoke-test it; no Docker
# engine and no image registry needed (only Debian's and PyPI's package mirrors).
#
#   1. installs buildah and debootstrap from Debian when they are missing;
#   2. builds the base image BentoML's Dockerfile names (python:3.11-slim) locally from Debian
#      bookworm (deploy/base-image.sh), cached in buildah's storage;
#   3. `bentoml build` in a throw-away BENTOML_HOME, then builds BentoML's generated Dockerfile
#      with `buildah bud`, minus the compilers it would install, with a numeric USER and the gRPC
#      port declared (default),
#      or runs the unmodified `bentoml containerize --backend buildah` (--stock);
#   4. runs the image the way deploy/k8s/deployment.yaml does, as far as buildah's chroot isolation
#      allows (see step 4 below), waits for /readyz and checks a temperature and four digit
#      predictions (one by the distilled model); checks torch is NOT in the image (unless the
#      Bento's requirements name torch);
#   5. prints the image size and the build time.
#
# Details and a recorded run: docs/deploy.md.  Run `deploy/container.sh --help`.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPLOY_DIR=$REPO_ROOT/deploy

PORT=3000
GRPC_PORT=8001
CA_BUNDLE=auto
REBUILD_BASE=0
SKIP_RUN=0
STOCK=0
BENTOFILE=""                        # default: bentoml build's own default, ./bentofile.yaml
TAG=""                              # default: thermo-digits:<bento version>
READY_TIMEOUT=${READY_TIMEOUT:-300}  # seconds for /readyz (model loading on a busy 2-core box)
# buildah's storage for this script: the vfs driver needs neither overlayfs nor fuse.
STATE_DIR=${DEPLOY_STATE_DIR:-/var/tmp/thermo-digits-deploy}
BENTOML=${BENTOML:-$REPO_ROOT/.venv/bin/bentoml}
MNIST_IMAGES=${MNIST_IMAGES:-${MNIST_DATA_ROOT:-$REPO_ROOT/../shared/data/mnist}/MNIST/raw/t10k-images-idx3-ubyte}

usage() {
    cat <<EOF
Usage: deploy/container.sh [options]

Builds the Bento (bentofile.yaml) into an OCI image with buildah, then serves it and checks
/readyz, /temperature, /digit and /digit/image, and gRPC health and inference.  Needs root; no Docker engine.
By default BentoML's generated Dockerfile is built without its 'build-essential git' packages
(every serving dependency is a binary wheel): about 350 MB smaller than with --stock; its USER
is made numeric (uid:gid), as Kubernetes' runAsNonRoot needs, and it declares the gRPC port
(EXPOSE).  The smoke test runs the image as deploy/k8s/deployment.yaml does: its user, env,
args and volumes, a read-only root filesystem, no capabilities, no_new_privs.

  --port N            port the smoke test serves on, on 127.0.0.1 (default $PORT)
  --grpc-port N       port the smoke test serves gRPC on (SERVICE_GRPC_PORT; default $GRPC_PORT)
  --tag NAME:TAG      image name (default thermo-digits:<bento version>)
  --ca-bundle PATH    extra CA bundle (PEM) the image trusts for its build downloads; 'auto'
                      (default): /etc/ssl/certs/ca-certificates.crt if present; 'none'
  --rebuild-base      rebuild the local python:3.11-slim base even if it is cached
  --stock             build with the unmodified 'bentoml containerize --backend buildah'
                      (keeps build-essential and git: for dependencies built from source)
  --bentofile FILE    build the Bento from FILE instead of bentofile.yaml (a variant)
  --skip-run          build only: no smoke test
  -h, --help          this text

Environment: DEPLOY_STATE_DIR (buildah storage, default $STATE_DIR), BENTOML (bentoml binary,
default the repo's .venv), READY_TIMEOUT (s, default 300), MNIST_IMAGES (idx file for the digit
check, default $MNIST_IMAGES), DEBIAN_MIRROR.
Inspect the results afterwards with:
  CONTAINERS_STORAGE_CONF=$STATE_DIR/storage.conf buildah images
EOF
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --port) PORT=${2:?--port needs a value}; shift 2 ;;
        --grpc-port) GRPC_PORT=${2:?--grpc-port needs a value}; shift 2 ;;
        --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
        --ca-bundle) CA_BUNDLE=${2:?--ca-bundle needs a value}; shift 2 ;;
        --rebuild-base) REBUILD_BASE=1; shift ;;
        --stock) STOCK=1; shift ;;
        --bentofile) BENTOFILE=$(realpath "${2:?--bentofile needs a value}"); shift 2 ;;
        --skip-run) SKIP_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "container.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $PORT =~ ^[0-9]+$ ]] || { echo "container.sh: --port must be a number" >&2; exit 2; }
[[ $GRPC_PORT =~ ^[0-9]+$ ]] || { echo "container.sh: --grpc-port must be a number" >&2; exit 2; }

log() { printf '[container] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
elapsed() { echo $(( $(date +%s) - $1 )); }
# An untrusted TLS interceptor shows up as uv's "invalid peer certificate: UnknownIssuer".
check_build_log() {
    if grep -q "invalid peer certificate" "$WORK/containerize.log"; then
        log "hint: the build could not verify PyPI's certificate; pass the CA bundle of this network's"
        log "      TLS proxy with --ca-bundle PATH (the default 'auto' uses the host's bundle)"
    fi
}

[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, and buildah without user namespaces)"
[[ -x $BENTOML ]] || die "$BENTOML not found: create the venv first (make setup-serve), or set BENTOML"
T0=$(date +%s)

# --- 1. tools -------------------------------------------------------------------------------------
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]} from Debian"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends "${missing[@]}" >/dev/null
fi

# vfs: plain directory copies, works on any filesystem without overlay or fuse (slower, bigger on
# disk).  chroot isolation: no user namespaces, cgroups or runc setup, which this VM cannot provide.
mkdir -p "$STATE_DIR"
cat >"$STATE_DIR/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$STATE_DIR/storage"
runroot = "/run/thermo-digits-containers"
EOF
export CONTAINERS_STORAGE_CONF=$STATE_DIR/storage.conf
export BUILDAH_ISOLATION=chroot
export BENTOML_DO_NOT_TRACK=true

# --- 2. base image --------------------------------------------------------------------------------
t=$(date +%s)
base_id() { buildah images --quiet --no-trunc docker.io/library/python:3.11-slim 2>/dev/null || true; }
base_before=$(base_id)
base_args=(--ca-bundle "$CA_BUNDLE")
[[ $REBUILD_BASE -eq 1 ]] && base_args+=(--rebuild)
PYTHON=$(dirname "$BENTOML")/python "$DEPLOY_DIR/base-image.sh" "${base_args[@]}"
BASE_S=$(elapsed "$t")
if [[ $(base_id) == "$base_before" ]]; then base_note="cached"; else base_note="built in ${BASE_S} s"; fi

# --- 3. Bento and image ---------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/thermo-digits-deploy.XXXXXX)
CTR=""
SERVER_PID=""
ROOTFS=""
cleanup() {
    local rc=$?
    stop_server
    unmount_rootfs
    [[ -n $CTR ]] && buildah rm "$CTR" >/dev/null 2>&1
    rm -rf "$WORK"
    exit "$rc"
}
unmount_rootfs() {
    # Undo make_rootfs_read_only, innermost first; `buildah rm` then unmounts the container itself.
    [[ -n $ROOTFS ]] || return 0
    if mountpoint -q "$ROOTFS/run"; then umount "$ROOTFS/run"; fi
    if mountpoint -q "$ROOTFS"; then umount "$ROOTFS"; fi
    ROOTFS=""
}
descendants() {
    local p
    for p in $(ps -o pid= --ppid "$1"); do echo "$p"; descendants "$p"; done
}
stop_server() {
    # Signalling buildah alone is not enough: BentoML starts each worker in its own session, so a
    # killed `bentoml serve` leaves its worker running (re-parented to init, port still bound).
    # Collect the whole tree under `buildah run` while it is intact -- buildah-chroot-runtime,
    # the entrypoint, `bentoml serve`, its workers -- then stop each of those processes by id.
    [[ -n $SERVER_PID ]] || return 0
    local pids alive p
    pids=$(descendants "$SERVER_PID")
    # shellcheck disable=SC2086
    [[ -z $pids ]] || kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 30); do
        alive=""
        for p in $pids "$SERVER_PID"; do kill -0 "$p" 2>/dev/null && alive+=" $p"; done
        [[ -n $alive ]] || break
        sleep 1
    done
    # shellcheck disable=SC2086
    [[ -z $alive ]] || kill -KILL $alive 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
# What deploy/k8s/deployment.yaml asks of the container runtime, one "KIND VALUE..." line each:
# uid, gid, arg, env NAME=VALUE, emptydir PATH, secret PATH FILE MODE.
pod_plan() {
    "$(dirname "$BENTOML")/python" - "$DEPLOY_DIR/k8s/deployment.yaml" <<'EOF'
import sys, yaml
deployment = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Deployment")
spec = deployment["spec"]["template"]["spec"]
pod, container = spec.get("securityContext", {}), spec["containers"][0]
volumes = {v["name"]: v for v in spec.get("volumes", [])}
print("uid", pod.get("runAsUser", ""))
print("gid", pod.get("runAsGroup", pod.get("runAsUser", "")))
for arg in container.get("args", []):
    print("arg", arg)
for e in container.get("env", []):
    if "value" in e:
        print("env", f"{e['name']}={e['value']}")
for m in container.get("volumeMounts", []):
    v = volumes[m["name"]]
    if "emptyDir" in v:
        print("emptydir", m["mountPath"])
    elif "secret" in v:
        for item in v["secret"].get("items") or [{"path": "tokens"}]:
            print("secret", m["mountPath"], item["path"], format(v["secret"].get("defaultMode", 0o644), "o"))
EOF
}
read_pod_plan() {
    local kind a b c
    POD_UID="" POD_GID="" pod_args=() env_args=() emptydirs=() secrets=()
    while read -r kind a b c; do
        case $kind in
            uid) POD_UID=$a ;;
            gid) POD_GID=$a ;;
            arg) pod_args+=("$a") ;;
            env) [[ $a == SERVICE_GRPC_PORT=* ]] || env_args+=(-e "$a") ;;  # --grpc-port's, below
            emptydir) emptydirs+=("$a") ;;
            secret) secrets+=("$a $b $c") ;;
        esac
    done < <(pod_plan)
    [[ $POD_UID =~ ^[0-9]+$ && $POD_UID -ne 0 && $POD_GID =~ ^[0-9]+$ ]] \
        || die "deploy/k8s/deployment.yaml must set a numeric non-root runAsUser"
    env_args+=(-e "SERVICE_GRPC_PORT=$GRPC_PORT")
}
# Host folders for the pod's volumes: each emptyDir an empty 0777 folder (as the kubelet makes
# it), each Secret a read-only folder holding a fresh random token, group fsGroup, its defaultMode.
prepare_volumes() {
    local n=0 path spec dir file mode
    volume_args=() SECRET_FILES=()
    TOKEN=$("$(dirname "$BENTOML")/python" -c 'import secrets; print(secrets.token_urlsafe(32))')
    for path in "${emptydirs[@]}"; do
        n=$((n + 1)); dir=$WORK/volume-$n
        mkdir "$dir"; chmod 0777 "$dir"
        volume_args+=(-v "$dir:$path")
    done
    for spec in "${secrets[@]}"; do
        read -r path file mode <<<"$spec"
        n=$((n + 1)); dir=$WORK/volume-$n
        mkdir "$dir"; chmod 0755 "$dir"
        printf '%s\n' "$TOKEN" >"$dir/$file"
        chgrp "$POD_GID" "$dir/$file"; chmod "$mode" "$dir/$file"
        volume_args+=(-v "$dir:$path:ro"); SECRET_FILES+=("$path/$file")
    done
}
# buildah 1.28's `run` has no --read-only, so the container's root (a plain folder with the vfs
# driver) is bind-mounted read-only onto itself, after creating the volumes' mount points (as a
# runtime does).  buildah must still create and delete /run/.containerenv, so /run becomes a
# tmpfs holding a copy of the image's /run, writable by root only (the server can write there
# only in /run/lock, 1777); check_run_untouched fails if the server left anything in it.
make_rootfs_read_only() {
    local path spec
    ROOTFS=$(buildah mount "$CTR")
    for path in "${emptydirs[@]}"; do mkdir -p "$ROOTFS$path"; done
    for spec in "${secrets[@]}"; do mkdir -p "$ROOTFS${spec%% *}"; done
    mkdir "$WORK/image-run"
    cp -a "$ROOTFS/run/." "$WORK/image-run/"
    mount --bind "$ROOTFS" "$ROOTFS"
    mount -o remount,bind,ro "$ROOTFS"
    mount -t tmpfs -o mode=0755,size=1m tmpfs "$ROOTFS/run"
    cp -a "$WORK/image-run/." "$ROOTFS/run/"
    touch "$ROOTFS/run/.containerenv"
    (cd "$ROOTFS/run" && find . | sort) >"$WORK/run-before"
}
check_run_untouched() {
    local left
    left=$(cd "$ROOTFS/run" && find . | sort | comm -13 "$WORK/run-before" -)
    [[ -z $left ]] || die "the server wrote to /run, read-only in the pod: $left"
}
# Every process of the server -- chrooted into the container's root, and not buildah's own
# buildah-chroot-exec -- runs as the pod's user, with no effective or permitted capabilities,
# no_new_privs and a seccomp filter (chroot isolation shares the host's pid namespace, so /proc
# here shows them).  Waits until `bentoml serve` has started its worker.
check_server_processes() {
    local p found=0 deadline=$(($(date +%s) + READY_TIMEOUT)) root
    root=$(stat -c %d:%i "$ROOTFS")
    image_pids() {
        for p in $(descendants "$SERVER_PID"); do
            [[ $(stat -L -c %d:%i "/proc/$p/root" 2>/dev/null) == "$root" ]] || continue
            [[ $(readlink "/proc/$p/exe" 2>/dev/null) == /memfd:buildah-chroot-exec* ]] && continue
            echo "$p"
        done
    }
    until [[ $(image_pids | wc -l) -ge 2 ]]; do
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 40 "$WORK/server.log" >&2; die "the server exited"; }
        [[ $(date +%s) -lt $deadline ]] || die "no worker process after ${READY_TIMEOUT} s"
        sleep 1
    done
    for p in $(image_pids); do
        found=$((found + 1))
        awk -v uid="$POD_UID" -v gid="$POD_GID" -v nnp="${#setpriv[@]}" '
            /^Uid:/ { ok_uid = ($2 == uid && $3 == uid && $4 == uid && $5 == uid) }
            /^Gid:/ { ok_gid = ($2 == gid && $3 == gid && $4 == gid && $5 == gid) }
            /^CapPrm:/ { ok_prm = ($2 ~ /^0+$/) }
            /^CapEff:/ { ok_eff = ($2 ~ /^0+$/) }
            /^NoNewPrivs:/ { ok_nnp = (nnp == 0 || $2 == 1) }
            /^Seccomp:/ { ok_sec = ($2 == 2) }
            END { exit !(ok_uid && ok_gid && ok_prm && ok_eff && ok_nnp && ok_sec) }
        ' "/proc/$p/status" || {
            grep -E '^(Name|Uid|Gid|CapPrm|CapEff|NoNewPrivs|Seccomp):' "/proc/$p/status" >&2
            die "server process $p does not run as the Deployment asks"
        }
    done
    log "$found server processes: uid $POD_UID gid $POD_GID, no capabilities${setpriv[*]:+, no_new_privs}, seccomp filter"
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # so that Ctrl-C also runs cleanup

# A throw-away BENTOML_HOME keeps the user's store untouched; importing the service registers the
# committed models/ into it, so the Bento picks them up.
export BENTOML_HOME=$WORK/bentoml-home
t=$(date +%s)
log "bentoml build (BENTOML_HOME=$BENTOML_HOME)"
build_args=(--output tag)
[[ -z $BENTOFILE ]] || build_args+=(--bentofile "$BENTOFILE")
bento_tag=$(cd "$REPO_ROOT" && "$BENTOML" build "${build_args[@]}" 2>"$WORK/build.log" | sed -n 's/^__tag__://p' | tail -n 1) \
    || true
[[ -n $bento_tag ]] || { cat "$WORK/build.log" >&2; die "bentoml build failed"; }
BENTO_S=$(elapsed "$t")
bento_version=${bento_tag#*:}
TAG=${TAG:-thermo-digits:$bento_version}
log "built Bento $bento_tag in ${BENTO_S} s; image tag $TAG"

t=$(date +%s)
if [[ $STOCK -eq 1 ]]; then
    log "bentoml containerize --backend buildah $bento_tag -t $TAG (takes minutes)"
    "$BENTOML" containerize --backend buildah -t "$TAG" "$bento_tag" >"$WORK/containerize.log" 2>&1 \
        || { tail -n 40 "$WORK/containerize.log" >&2; check_build_log; die "containerize failed"; }
else
    # The build context `bentoml containerize` would use (Bento + its models + Dockerfile), written
    # out so that the Dockerfile can be trimmed: the stock one installs build-essential and git,
    # which only matter when a dependency has to be compiled from source.
    # construct_containerfile is what `bentoml containerize` itself calls (an internal API, fine
    # with bentoml pinned); the Dockerfile check below fails loudly if its output ever changes.
    log "exporting the build context of $bento_tag"
    "$(dirname "$BENTOML")/python" - "$bento_tag" "$WORK/context" <<'EOF'
import shutil, sys
import bentoml
from bentoml._internal.container import construct_containerfile
bento = bentoml.bentos.get(sys.argv[1])
with construct_containerfile(bento, enable_buildkit=False) as (context, _dockerfile):
    shutil.copytree(context, sys.argv[2])
EOF
    dockerfile=$WORK/context/env/docker/Dockerfile
    grep -q ' build-essential git$' "$dockerfile" || die "unexpected Dockerfile: no 'build-essential git' line to trim"
    sed -i 's/ build-essential git$/ \&\& rm -rf \/var\/lib\/apt\/lists\/*/' "$dockerfile"
    # A numeric USER: Kubernetes' runAsNonRoot can only verify a numeric one (same uid and gid).
    grep -q '^USER bentoml$' "$dockerfile" || die "unexpected Dockerfile: no 'USER bentoml' line"
    # shellcheck disable=SC2016  # the Dockerfile's own ARGs, expanded by buildah
    sed -i 's/^USER bentoml$/USER $BENTO_USER_UID:$BENTO_USER_GID/' "$dockerfile"
    # The service's gRPC port declared beside BentoML's 3000 (bentoml containerize has no way to).
    IMAGE_GRPC_PORT=$(cd "$REPO_ROOT" && "$(dirname "$BENTOML")/python" -c \
        'from service.settings import Settings; print(Settings().grpc_port)')
    grep -q '^EXPOSE 3000$' "$dockerfile" || die "unexpected Dockerfile: no 'EXPOSE 3000' line"
    sed -i "s/^EXPOSE 3000\$/EXPOSE 3000 $IMAGE_GRPC_PORT/" "$dockerfile"
    log "buildah bud (Dockerfile without build-essential git) -t $TAG (takes a minute or more)"
    buildah bud --isolation chroot --format oci -f "$dockerfile" -t "$TAG" "$WORK/context" \
        >"$WORK/containerize.log" 2>&1 \
        || { tail -n 40 "$WORK/containerize.log" >&2; check_build_log; die "buildah bud failed"; }
fi
IMAGE_S=$(elapsed "$t")
log "image $TAG built in ${IMAGE_S} s"

# buildah names local images localhost/NAME:TAG.
IMAGE=$TAG
[[ $IMAGE == */* ]] || IMAGE=localhost/$IMAGE
size=$(buildah images --format '{{.Name}}:{{.Tag}}  {{.Size}}' "$IMAGE")

# The image's USER is the pod's numeric user, so that runAsNonRoot can verify it (not with --stock:
# BentoML's Dockerfile names the user, 'bentoml'; the pod's runAsUser then decides).
read_pod_plan
image_user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$IMAGE")
if [[ $STOCK -eq 0 ]]; then
    [[ $image_user == "$POD_UID:$POD_GID" ]] \
        || die "image USER is '$image_user'; deploy/k8s/deployment.yaml runs $POD_UID:$POD_GID"
    log "image USER $image_user, the uid:gid deploy/k8s/deployment.yaml runs"
    exposed=$(buildah inspect --type image --format '{{.OCIv1.Config.ExposedPorts}}' "$IMAGE")
    [[ $exposed == *"$IMAGE_GRPC_PORT/tcp"* ]] || die "image exposes $exposed, not the gRPC port $IMAGE_GRPC_PORT"
    log "image exposes $exposed"
else
    log "--stock: image USER is '$image_user'; the pod's runAsUser $POD_UID decides"
fi

# --- 4. run and check -----------------------------------------------------------------------------
# The smoke test runs the image the way deploy/k8s/deployment.yaml runs it, as far as buildah's
# chroot isolation allows: the pod's uid and gid, the container's args and env, a read-only root
# filesystem, its emptyDirs as empty writable folders, its Secret as a read-only folder holding a
# random token (sent with every request), all capabilities dropped, no_new_privs (setpriv, for
# allowPrivilegeEscalation: false) and buildah's default seccomp filter; it then checks every
# server process's credentials in /proc.  What it cannot check here: the NetworkPolicy, Service,
# kubelet probes, PDB and HPA (host network, no cluster); resource limits and the emptyDir's
# sizeLimit (no cgroups); the cluster runtime's own RuntimeDefault profile (buildah applies the
# containers/common default profile); an empty capability bounding set (buildah's chroot keeps
# CAP_SETUID there; the effective and permitted sets are checked to be empty); fsGroup (imitated by
# the token file's group); the symlinked layout of a Kubernetes Secret volume.
if [[ $SKIP_RUN -eq 0 ]]; then
    CTR=$(buildah from --name "thermo-digits-smoke-$$" "$IMAGE")
    # The image's ENTRYPOINT with the Deployment's args: `serve` makes it run
    # `bentoml serve <flags> $BENTO_PATH` in /app/.venv.
    entrypoint=$(buildah inspect --format '{{range .OCIv1.Config.Entrypoint}}{{.}} {{end}}' "$CTR")
    read -r -a entrypoint <<<"$entrypoint"
    [[ ${#entrypoint[@]} -gt 0 ]] || die "image $IMAGE has no ENTRYPOINT"

    # The lean image serves with ONNX Runtime only; a variant whose requirements name torch (see
    # docs/deploy.md, GPU image) must have it instead.
    requirements=$BENTOML_HOME/bentos/${bento_tag%%:*}/$bento_version/env/python/requirements.txt
    if grep -qiE '^[[:space:]]*torch([^a-z0-9_-]|$)' "$requirements"; then
        log "the Bento's requirements name torch: it must be importable in the image"
        buildah run --isolation chroot "$CTR" -- python -c "import torch" \
            || die "torch is listed in $requirements but not importable in $IMAGE"
        torch_state="import torch: ok"
    else
        log "torch must not be importable in the image"
        if buildah run --isolation chroot "$CTR" -- python -c "import torch" >/dev/null 2>&1; then
            die "torch is importable inside $IMAGE: the image is not lean"
        fi
        torch_state="import torch: ModuleNotFoundError"
    fi
    buildah run --isolation chroot "$CTR" -- python -c \
        "import sys, onnxruntime, bentoml; print('in image: python', sys.version.split()[0], '| onnxruntime', onnxruntime.__version__, '| bentoml', bentoml.__version__, '| $torch_state')"
    setpriv=(setpriv --no-new-privs)
    buildah run --isolation chroot "$CTR" -- setpriv --version >/dev/null 2>&1 || {
        setpriv=()
        log "no setpriv in the image: no_new_privs (allowPrivilegeEscalation: false) not imitated"
    }

    # With host networking, a server already on this port (e.g. `make serve`) would answer the checks.
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        die "something already listens on 127.0.0.1:$PORT; choose another --port"
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$GRPC_PORT") 2>/dev/null; then
        die "something already listens on 127.0.0.1:$GRPC_PORT; choose another --grpc-port"
    fi
    prepare_volumes
    make_rootfs_read_only
    log "serving as $POD_UID:$POD_GID, read-only root, writable ${emptydirs[*]}, tokens in ${SECRET_FILES[*]} (read-only)"
    log "  ${setpriv[*]} ${entrypoint[*]} ${pod_args[*]} --host 127.0.0.1 --port $PORT"
    buildah run --isolation chroot --network host --user "$POD_UID:$POD_GID" --cap-drop all \
        "${volume_args[@]}" "${env_args[@]}" "$CTR" -- \
        "${setpriv[@]}" "${entrypoint[@]}" "${pod_args[@]}" --host 127.0.0.1 --port "$PORT" \
        >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    check_server_processes

    # Stdlib only (run by the venv's python): readiness, then the predictions.
    # Tokens are enforced once the service reads SERVICE_API_TOKENS_FILE (then a request without
    # one must get 401); the probes' routes never need one.
    bento_src=$BENTOML_HOME/bentos/${bento_tag%%:*}/$bento_version/src
    if grep -rqs SERVICE_API_TOKENS_FILE "$bento_src"; then auth=enforced; else auth=unsupported; fi
    if ! SMOKE_TOKEN=$TOKEN "$(dirname "$BENTOML")/python" - "$PORT" "$READY_TIMEOUT" "$SERVER_PID" "$MNIST_IMAGES" "$auth" "$GRPC_PORT" <<'EOF'
import json, os, struct, sys, time, urllib.error, urllib.request, uuid, zlib

port, timeout, server_pid, mnist = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
auth, grpc_port = sys.argv[5], int(sys.argv[6])
base = f"http://127.0.0.1:{port}"

def call(path, body=None, content_type="application/json", token=os.environ["SMOKE_TOKEN"]):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    headers = {"Content-Type": content_type} if data else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

start = time.time()
while True:
    try:
        if call("/readyz", token=None)[0] == 200:
            break
    except OSError:
        pass
    try:
        os.kill(server_pid, 0)
    except ProcessLookupError:
        sys.exit("server exited before it was ready")
    if time.time() - start > timeout:
        sys.exit(f"/readyz not 200 after {timeout:.0f} s")
    time.sleep(2)
print(f"GET /readyz -> 200 after {time.time() - start:.1f} s")
failures = []

def png(side, raw, idat):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))

def upload(data, filename):
    boundary = uuid.uuid4().hex
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return form, f"multipart/form-data; boundary={boundary}"

def check(ok, message):
    print(("ok   " if ok else "FAIL ") + message)
    if not ok:
        failures.append(message)

check(call("/livez", token=None)[0] == 200, "GET /livez without a token -> 200")
if auth == "enforced":
    status, body = call("/temperature", {"readings": [35.7]}, token=None)
    check(status == 401, f"POST /temperature without a token -> {status} (expect 401)")
    status, body = call("/temperature", {"readings": [35.7]}, token="not-" + os.environ["SMOKE_TOKEN"])
    check(status == 401, f"POST /temperature with a wrong token -> {status} (expect 401)")
else:
    print("tokens: the service does not read SERVICE_API_TOKENS_FILE yet; every request carries one anyway")

status, body = call("/temperature", {"readings": [35.7]})
celsius = json.loads(body)["celsius"][0] if status == 200 else float("nan")
check(status == 200 and abs(celsius - 1.858) < 1e-3,
      f"POST /temperature {{readings:[35.7]}} -> {status} {body.decode()[:200]}  (expect celsius 1.858 +- 1e-3)")

status, body = call("/digit", {"pixels": [[0] * 28 for _ in range(28)]})
probs = json.loads(body).get("probabilities", []) if status == 200 else []
check(status == 200 and len(probs) == 10 and abs(sum(probs) - 1) < 1e-4,
      f"POST /digit (all-zero image) -> {status}, {len(probs)} probabilities summing to {sum(probs):.6f}")

if os.path.exists(mnist):
    with open(mnist, "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        pixels = f.read(rows * cols)
    assert magic == 2051 and (rows, cols) == (28, 28), "not an MNIST idx3 image file"
    expected = 7  # the first t10k image
    labels = mnist.replace("images-idx3", "labels-idx1")
    if os.path.exists(labels):
        with open(labels, "rb") as f:
            expected = f.read(9)[8]
    image = [list(pixels[r * 28:(r + 1) * 28]) for r in range(28)]
    status, body = call("/digit", {"pixels": image})
    answer = json.loads(body) if status == 200 else {}
    check(status == 200 and answer.get("digit") == expected,
          f"POST /digit (first MNIST test image, label {expected}) -> {status} digit={answer.get('digit')} "
          f"confidence={answer.get('confidence', float('nan')):.4f}")
    status, body = call("/digit", {"pixels": image, "model": "distilled"})
    answer = json.loads(body) if status == 200 else {}
    check(status == 200 and answer.get("digit") == expected and answer.get("model") == "mnist-fc-distilled",
          f"POST /digit (same image, model distilled) -> {status} digit={answer.get('digit')} "
          f"model={answer.get('model')} confidence={answer.get('confidence', float('nan')):.4f}")

    # The same image as a PNG upload (28x28 greyscale: the service uses it unchanged).
    raw = b"".join(b"\x00" + pixels[r * 28:(r + 1) * 28] for r in range(28))
    status, body = call("/digit/image", *upload(png(28, raw, zlib.compress(raw)), "seven.png"))
    answer = json.loads(body) if status == 200 else {}
    check(status == 200 and answer.get("digit") == expected,
          f"POST /digit/image (same image as PNG) -> {status} digit={answer.get('digit')} "
          f"confidence={answer.get('confidence', float('nan')):.4f}")
else:
    print(f"skip MNIST digit checks: {mnist} not found (set MNIST_IMAGES)")

# An upload over 1 MB: Starlette spools it to a temporary file, i.e. the pod's /tmp emptyDir.
side = 1232
raw = b"".join(b"\x00" + os.urandom(side) for _ in range(side))
big = png(side, raw, zlib.compress(raw, 0))
status, body = call("/digit/image", *upload(big, "noise.png"))
probs = json.loads(body).get("probabilities", []) if status == 200 else []
check(status == 200 and len(probs) == 10,
      f"POST /digit/image ({len(big) / 2**20:.1f} MiB PNG of noise, spooled to /tmp) -> {status}, {len(probs)} probabilities")

# gRPC (the venv's grpcio and the repository's stubs): the health probe Kubernetes uses, and one inference.
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service.v2.proto import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pb_grpc

with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
    try:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
        check(health.status == health_pb2.HealthCheckResponse.SERVING, f"gRPC health Check -> {health.status} (expect SERVING)")
    except grpc.RpcError as e:
        check(False, f"gRPC health Check -> {e.code()}: {e.details()}")
    request = pb.ModelInferRequest(model_name="temperature-linear", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="readings", datatype="FP64", shape=[1, 1], contents=pb.InferTensorContents(fp64_contents=[35.7]))])
    metadata = [("authorization", f"Bearer {os.environ['SMOKE_TOKEN']}")]
    try:
        answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=metadata, timeout=30)
        celsius = answer.outputs[0].contents.fp64_contents[0]
        check(abs(celsius - 1.858) < 1e-3, f"gRPC ModelInfer temperature-linear [35.7] -> {celsius} (expect 1.858 +- 1e-3)")
    except grpc.RpcError as e:
        check(False, f"gRPC ModelInfer -> {e.code()}: {e.details()}")

sys.exit(f"{len(failures)} check(s) failed" if failures else 0)
EOF
    then
        log "server log (last 40 lines):"
        tail -n 40 "$WORK/server.log" >&2
        die "smoke test failed"
    fi
    stop_server
    check_run_untouched
    for i in "${!emptydirs[@]}"; do
        log "left in emptyDir ${emptydirs[$i]}: $(cd "$WORK/volume-$((i + 1))" && find . -maxdepth 2 -mindepth 1 \
            | sed 's|^\./||; s/-[a-z0-9_]\{8\}$/-*/' | sort -u | tr '\n' ' ')"
    done
    unmount_rootfs
    buildah rm "$CTR" >/dev/null
    CTR=""
    log "server stopped, working container removed"
fi

# Images left without a name (a replaced base, a re-tagged build) only take disk space: with the
# vfs driver every layer is a full copy.  This storage is the script's own, so pruning is safe.
buildah rmi --prune >/dev/null 2>&1 || true

# --- 5. summary -----------------------------------------------------------------------------------
echo "image:      $size"
echo "bento:      $bento_tag"
echo "build time: base image $base_note; bentoml build ${BENTO_S} s; image ${IMAGE_S} s; script total $(elapsed "$T0") s"
echo "run it:     CONTAINERS_STORAGE_CONF=$STATE_DIR/storage.conf buildah from --name td $IMAGE && \\"
echo "            CONTAINERS_STORAGE_CONF=$STATE_DIR/storage.conf buildah run --isolation chroot --network host td -- ${entrypoint[*]:-/home/bentoml/bento/env/docker/entrypoint.sh} --port $PORT"
