#!/usr/bin/env bash
# `make images`: one OCI image, medbench/platform:<version>, holding the six services and the
# website; each runs as `python -m <module>` (the chart's per-service command). No container
# engine and no daemon: mmdebstrap makes a Debian rootfs, uv installs the wheels into a venv in
# it (inside a chroot, on overlayfs), GNU tar writes each layer reproducibly and umoci packs the
# OCI image layout. Needs root (mmdebstrap --mode=root, chroot, overlay mounts).
#
# Layers, from least to most often changed (a rebuild reuses the cached ones):
#   1. Debian base: the packages and versions of images/debian.lock, a user 10001 (cached per
#      lock, per user: ${MEDBENCH_CACHE_DIR:-~/.cache/medbench}/images)
#   2. Third-party wheels: uv.lock's pins and sha256 hashes (--require-hashes), binary only
#      (cached per lock and base)
#   3. The workspace's own wheels (uv build; always rebuilt, about a megabyte)
#
# Usage: images/build.sh [build | lock]   (lock: rebuild the base and rewrite images/debian.lock)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${1:-build}

# -- Inputs --------------------------------------------------------------------------------------
LOCK=images/debian.lock
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# What the base layer asks for (libstdc++6: grpcio's and other C++ wheels link it, as manylinux
# wheels may); the lock records everything that comes with it.
BASE_PACKAGES=(python3.11 ca-certificates libstdc++6)
# The workspace members in the image (not medbench-devstack: local Kafka and the test-only
# Mongo-wire server are never deployed) and the modules run as `python -m <module>`.
MEMBERS=(medbench-protos medbench-runtime medbench-messaging medbench-storage medbench-client
  medbench-site medbench-review gateway rotator dispatcher metric-scorer judge-scorer aggregator)
ENTRYPOINTS=(gateway rotator dispatcher metric_scorer judge_scorer aggregator medbench_site
  medbench_review)
IMAGE_USER=10001
VENV=/opt/medbench
NAME=medbench/platform
VERSION=$(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')

OUT=${IMAGES_OUT:-$ROOT/.tmp/images}
LAYOUT=$OUT/medbench-platform
CACHE=${MEDBENCH_CACHE_DIR:-$HOME/.cache/medbench}/images
UV=$ROOT/.venv/bin/uv
mkdir -p "$OUT" "$CACHE"

[[ $(id -u) == 0 ]] || { echo "images/build.sh: needs root (mmdebstrap, chroot, overlayfs)" >&2; exit 1; }

lock_value() { awk -v k="$1" '$1 == k { print $2 }' "$LOCK"; }
SUITE=$(lock_value suite)
DEBIAN_EPOCH=$(lock_value epoch)
# The app layer and the image's dates: the last commit's time, unless given.
APP_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
REVISION=$(git rev-parse HEAD)
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

say() { printf 'images: %s\n' "$*" >&2; }

# A layer tar that is the same bytes for the same files: sorted names, numeric root owner,
# mtimes clamped to the epoch, no atime/ctime.
layer_tar() {  # <epoch> <out.tar> <dir> <path inside dir>...
  local epoch=$1 out=$2 dir=$3
  shift 3
  tar --create --file "$out" --directory "$dir" --sort=name --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --mtime="@$epoch" --clamp-mtime --owner=0 --group=0 --numeric-owner "$@"
}

# Runs a command chrooted into lower dirs + an upper dir on overlayfs, in a private mount
# namespace (every mount goes away with it): what the command writes lands in <upper>.
# The host's DNS and CA bundle are bind-mounted for the download of wheels (never kept).
in_overlay() {  # <lowerdirs colon-separated> <upper> <command...>
  local lower=$1 upper=$2
  shift 2
  local scratch
  scratch=$(mktemp -d "$OUT/overlay.XXXXXX")
  mkdir -p "$upper" "$scratch/work" "$scratch/merged" "$CACHE/uv-cache"
  unshare --mount --fork -- bash -euo pipefail -c '
    lower=$1 upper=$2 scratch=$3 cache=$4; shift 4
    m=$scratch/merged
    mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$scratch/work" "$m"
    mkdir -p "$m/proc" "$m/dev" "$m/var/cache/uv" "$m/tmp"
    mount -t proc proc "$m/proc"
    mount --rbind /dev "$m/dev"
    mount --bind "$cache" "$m/var/cache/uv"
    touch "$m/etc/resolv.conf" "$m/tmp/host-ca.crt"
    mount --bind /etc/resolv.conf "$m/etc/resolv.conf"
    mount --bind /etc/ssl/certs/ca-certificates.crt "$m/tmp/host-ca.crt"
    exec chroot "$m" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp \
      SSL_CERT_FILE=/tmp/host-ca.crt UV_CACHE_DIR=/var/cache/uv UV_NO_CONFIG=1 \
      ${UV_DEFAULT_INDEX:+UV_DEFAULT_INDEX=$UV_DEFAULT_INDEX} \
      ${UV_INDEX_URL:+UV_INDEX_URL=$UV_INDEX_URL} \
      ${HTTPS_PROXY:+HTTPS_PROXY=$HTTPS_PROXY} ${https_proxy:+https_proxy=$https_proxy} \
      "$@"
  ' bash "$lower" "$upper" "$scratch" "$CACHE/uv-cache" "$@"
  rm -rf "$scratch"
  # Deletions would be whiteouts (character devices): this build only ever adds files.
  if [[ -n $(find "$upper" -type c -print -quit) ]]; then
    echo "images/build.sh: a step deleted files from a lower layer:" >&2
    find "$upper" -type c >&2
    exit 1
  fi
}

# -- Layer 1: the Debian base --------------------------------------------------------------------
# mmdebstrap, variant essential (no apt, no compiler): the listed packages at the lock's
# versions over bookworm, -updates and -security; merged /usr without the usrmerge package
# (which would pull in perl); no docs but copyright files, no man pages, no locales, no device
# nodes (the runtime makes /dev). Reproducible: SOURCE_DATE_EPOCH is the lock's epoch.
debian_base() {  # <out.tar> <packages.txt> <pinned|latest>
  local out=$1 manifest=$2 pins=$3 include=() pkg ver
  for pkg in "${BASE_PACKAGES[@]}"; do
    ver=$(awk -v p="$pkg" '$1 == "package" && $2 == p { print $3 }' "$LOCK")
    if [[ $pins == pinned && -n $ver ]]; then include+=("$pkg=$ver"); else include+=("$pkg"); fi
  done
  say "mmdebstrap $SUITE: ${include[*]}"
  SOURCE_DATE_EPOCH=$DEBIAN_EPOCH mmdebstrap --mode=root --variant=essential --quiet \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include="$(IFS=,; echo "${include[*]}")" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --skip=output/dev \
    --customize-hook="chroot \"\$1\" dpkg-query -W -f='\${Package} \${Version}\n' | LC_ALL=C sort > '$manifest'" \
    --customize-hook="echo 'medbench:x:$IMAGE_USER:$IMAGE_USER:MedBench:/nonexistent:/usr/sbin/nologin' >> \"\$1/etc/passwd\"" \
    --customize-hook="echo 'medbench:x:$IMAGE_USER:' >> \"\$1/etc/group\"" \
    --customize-hook="echo 'medbench:!::0:99999:7:::' >> \"\$1/etc/shadow\"" \
    --customize-hook="echo 'medbench:!::' >> \"\$1/etc/gshadow\"" \
    "$SUITE" "$out" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
    "deb $SECURITY_MIRROR $SUITE-security main"
}

if [[ $MODE == lock ]]; then
  epoch=$(date -u -d "$(date -u +%Y-%m-%d)" +%s)
  tmp=$(mktemp -d "$OUT/lock.XXXXXX")
  sed -i "s/^epoch .*/epoch $epoch/" "$LOCK"
  DEBIAN_EPOCH=$epoch
  debian_base "$tmp/base.tar" "$tmp/packages.txt" latest
  { grep -E '^(#|suite |epoch )' "$LOCK"; awk '{ print "package", $1, $2 }' "$tmp/packages.txt"; } \
    > "$tmp/lock" && mv "$tmp/lock" "$LOCK"
  rm -rf "$tmp"
  say "wrote $LOCK ($(grep -c '^package ' "$LOCK") packages, epoch $epoch); review and commit it"
  exit 0
fi

started=$SECONDS
base_key=$(cat "$LOCK" <(declare -f debian_base) <(echo "${BASE_PACKAGES[*]} $IMAGE_USER") | sha256sum | cut -c1-16)
BASE_TAR=$CACHE/base-$base_key.tar
BASE_DIR=$CACHE/base-$base_key
if [[ ! -f $BASE_TAR ]]; then
  rm -rf "$CACHE"/base-* "$CACHE"/deps-*
  tmp=$(mktemp -d "$OUT/base.XXXXXX")
  # IMAGES_PINS=warn (`make test`): a mirror that no longer serves the lock's versions builds
  # from what it serves, with a warning, so that a Debian security update cannot stop the
  # tests; a release build (`make images`) stays strict.
  if ! debian_base "$tmp/base.tar" "$tmp/packages.txt" pinned; then
    [[ ${IMAGES_PINS:-strict} == warn ]] || { rm -rf "$tmp"; exit 1; }
    say "warning: the mirror lacks the pinned versions of $LOCK; building from its current ones"
    debian_base "$tmp/base.tar" "$tmp/packages.txt" latest
  fi
  # The lock is the record: a mirror that moved on (a point release or a security update)
  # fails the build with the difference; `make images-lock` takes the new versions.
  if ! diff -u <(awk '$1 == "package" { print $2, $3 }' "$LOCK") "$tmp/packages.txt" >&2; then
    echo "images/build.sh: the Debian mirror's packages differ from $LOCK (above: - lock," \
      "+ mirror); run \`make images-lock\`, review the diff and commit it" >&2
    if [[ ${IMAGES_PINS:-strict} != warn ]]; then
      rm -rf "$tmp"
      exit 1
    fi
    say "warning: IMAGES_PINS=warn, building anyway (this image is not a release)"
  fi
  mv "$tmp/base.tar" "$BASE_TAR"
  rm -rf "$tmp"
fi
if [[ ! -d $BASE_DIR ]]; then
  mkdir -p "$BASE_DIR.tmp" && tar -xf "$BASE_TAR" -C "$BASE_DIR.tmp" && mv "$BASE_DIR.tmp" "$BASE_DIR"
fi
say "base layer ready ($((SECONDS - started)) s)"

# -- Layer 2: third-party wheels -----------------------------------------------------------------
# uv.lock's pins and hashes for the members' dependencies, installed with --no-deps
# --require-hashes and binary wheels only (nothing compiled: the image has no compiler).
REQS=$OUT/requirements.txt
"$UV" export --frozen --no-dev --no-emit-workspace --no-header --no-annotate \
  $(printf -- '--package %s ' "${MEMBERS[@]}") -o "$REQS" >/dev/null
deps_key=$(cat <(echo "$base_key") "$REQS" <(declare -f in_overlay) | sha256sum | cut -c1-16)
DEPS_DIR=$CACHE/deps-$deps_key
DEPS_TAR=$CACHE/deps-$deps_key.tar
if [[ ! -f $DEPS_TAR ]]; then
  rm -rf "$CACHE"/deps-*
  mkdir -p "$DEPS_DIR.tmp/tmp"
  cp "$REQS" "$DEPS_DIR.tmp/tmp/requirements.txt"
  cp "$UV" "$DEPS_DIR.tmp/tmp/uv"
  say "installing $(grep -c '==' "$REQS") wheels (uv.lock hashes)"
  in_overlay "$BASE_DIR" "$DEPS_DIR.tmp" sh -euc "
    python3.11 -m venv --without-pip $VENV
    /tmp/uv pip install --quiet --python $VENV/bin/python --no-deps --require-hashes \
      --only-binary :all: --link-mode copy -r /tmp/requirements.txt
    $VENV/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash $VENV/lib
  "
  layer_tar "$DEBIAN_EPOCH" "$DEPS_TAR.tmp" "$DEPS_DIR.tmp" ./opt/medbench
  mv "$DEPS_DIR.tmp" "$DEPS_DIR" && mv "$DEPS_TAR.tmp" "$DEPS_TAR"
fi
say "dependency layer ready ($((SECONDS - started)) s)"

# -- Layer 3: the workspace's wheels -------------------------------------------------------------
build=$OUT/build
rm -rf "$build" && mkdir -p "$build/dist" "$build/app/tmp/dist"
for member in "${MEMBERS[@]}"; do
  SOURCE_DATE_EPOCH=$APP_EPOCH "$UV" build --quiet --wheel --package "$member" --out-dir "$build/dist" 2>&1
done
# Their hashes too: every wheel installed into the image is hash-checked.
(cd "$build/dist" && for w in *.whl; do
  echo "$(unzip -p "$w" '*.dist-info/METADATA' | awk '/^Name: /{ print $2; exit }') @ file:///tmp/dist/$w --hash=sha256:$(sha256sum "$w" | cut -d' ' -f1)"
done) > "$build/app-requirements.txt"
cp "$build"/dist/*.whl "$build/app/tmp/dist/"
cp "$build/app-requirements.txt" "$build/app/tmp/requirements.txt"
cp "$UV" "$build/app/tmp/uv"
mkdir -p "$build/app/opt/medbench/share"
# What went into the image, readable from inside it.
cp "$LOCK" "$build/app/opt/medbench/share/debian.lock"
cat "$REQS" "$build/app-requirements.txt" | sed 's#file:///tmp/dist/#./#' \
  > "$build/app/opt/medbench/share/requirements.txt"
modules=$(printf '%s ' "${ENTRYPOINTS[@]}")
in_overlay "$DEPS_DIR:$BASE_DIR" "$build/app" sh -euc "
  /tmp/uv pip install --quiet --python $VENV/bin/python --no-deps --require-hashes --offline \
    --link-mode copy -r /tmp/requirements.txt
  site=\$($VENV/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')
  # uv notes the install time of a local wheel (uv_cache.json): not part of a reproducible image.
  for record in \$site/*.dist-info/RECORD; do
    if [ -f \"\${record%RECORD}uv_cache.json\" ]; then
      rm \"\${record%RECORD}uv_cache.json\"
      sed -i '/dist-info\\/uv_cache.json,/d' \"\$record\"
    fi
  done
  for m in medbench medbench_runtime medbench_messaging medbench_storage medbench_client $modules; do
    test -f \"\$site/\$m/__init__.py\"
    $VENV/bin/python -m compileall -q --invalidation-mode unchecked-hash \"\$site/\$m\"
  done
"
layer_tar "$APP_EPOCH" "$build/app.tar" "$build/app" ./opt/medbench
say "app layer ready ($((SECONDS - started)) s)"

# -- The OCI image layout ------------------------------------------------------------------------
# The two cached layers, compressed once: a layout of its own in the cache (umoci writes
# blobs by digest and never changes one, so the image's layout links them).
BASE_LAYOUT=$CACHE/layout-$deps_key
if [[ ! -d $BASE_LAYOUT ]]; then
  rm -rf "$CACHE"/layout-* "$BASE_LAYOUT.tmp"
  umoci init --layout "$BASE_LAYOUT.tmp"
  umoci new --image "$BASE_LAYOUT.tmp:base"
  umoci raw add-layer --image "$BASE_LAYOUT.tmp:base" --history.created "$(iso "$DEBIAN_EPOCH")" \
    --history.created_by "mmdebstrap --variant=essential $SUITE ${BASE_PACKAGES[*]} (images/debian.lock)" \
    "$BASE_TAR"
  umoci raw add-layer --image "$BASE_LAYOUT.tmp:base" --history.created "$(iso "$DEBIAN_EPOCH")" \
    --history.created_by "uv pip install --require-hashes (uv.lock) into $VENV" "$DEPS_TAR"
  umoci gc --layout "$BASE_LAYOUT.tmp"
  mv "$BASE_LAYOUT.tmp" "$BASE_LAYOUT"
fi
rm -rf "$LAYOUT"
cp -al "$BASE_LAYOUT" "$LAYOUT"
rm "$LAYOUT/index.json" && cp "$BASE_LAYOUT/index.json" "$LAYOUT/index.json"
umoci tag --image "$LAYOUT:base" "$VERSION" && umoci rm --image "$LAYOUT:base"
created=$(iso "$APP_EPOCH")
umoci raw add-layer --image "$LAYOUT:$VERSION" --history.created "$created" \
  --history.created_by "uv build + uv pip install --require-hashes: ${MEMBERS[*]}" "$build/app.tar"
labels=(
  "org.opencontainers.image.title=medbench-platform"
  "org.opencontainers.image.description=MedBench services and website; run python -m <module>: ${ENTRYPOINTS[*]}"
  "org.opencontainers.image.version=$VERSION"
  "org.opencontainers.image.revision=$REVISION"
  "org.opencontainers.image.created=$created"
  "org.opencontainers.image.ref.name=$NAME:$VERSION"
  "org.opencontainers.image.base.name=debian:$SUITE"
  "org.medbench.entrypoints=${ENTRYPOINTS[*]}"
)
config_args=()
for label in "${labels[@]}"; do config_args+=(--config.label "$label"); done
for note in "org.opencontainers.image.version=$VERSION" "org.opencontainers.image.revision=$REVISION" \
  "org.opencontainers.image.created=$created"; do
  config_args+=(--manifest.annotation "$note")
done
umoci config --image "$LAYOUT:$VERSION" --no-history --created "$created" \
  --author "MedBench" --os linux --architecture amd64 \
  --config.user "$IMAGE_USER:$IMAGE_USER" --config.workingdir /tmp \
  --config.env "PATH=$VENV/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --config.env "HOME=/tmp" --config.env "PYTHONUNBUFFERED=1" \
  --config.env "PYTHONDONTWRITEBYTECODE=1" --config.env "LANG=C.UTF-8" \
  --config.entrypoint python --config.entrypoint -m \
  --config.cmd gateway \
  --config.stopsignal SIGTERM "${config_args[@]}"
umoci gc --layout "$LAYOUT"
rm -rf "$build/app" "$build/dist"
manifest=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$LAYOUT/index.json")
say "built $NAME:$VERSION in $((SECONDS - started)) s: oci:$LAYOUT:$VERSION ($manifest," \
  "$(du -sh "$LAYOUT/blobs" | cut -f1) compressed)"
