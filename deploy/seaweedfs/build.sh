#!/usr/bin/env bash
# Builds the SeaweedFS `weed` binary from the Go module proxy into the cache, once per version
# (about 6 minutes on two cores; the result is ~230 MB). Concurrent callers (make test and make demo,
# several worktrees on one machine) wait on one lock, so it is built once. Prints the binary's path.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=deploy/seaweedfs/env.sh
. "$ROOT/deploy/seaweedfs/env.sh"
log() { printf '[seaweedfs] %s\n' "$*" >&2; }
die() { printf '[seaweedfs] error: %s\n' "$*" >&2; exit 1; }

if [[ -x $WEED_BIN && -f $SEAWEEDFS_CACHE/.complete ]]; then echo "$WEED_BIN"; exit 0; fi
command -v go >/dev/null || die "go not found (Go 1.24+ is needed once, to build SeaweedFS)"
mkdir -p "$SEAWEEDFS_CACHE"
exec 8>"$SEAWEEDFS_CACHE/.lock"; flock 8
if [[ -x $WEED_BIN && -f $SEAWEEDFS_CACHE/.complete ]]; then echo "$WEED_BIN"; exit 0; fi

log "building SeaweedFS $SEAWEEDFS_VERSION into $SEAWEEDFS_CACHE (once; several minutes)"
buildlog="$SEAWEEDFS_CACHE/build.log"
: >"$buildlog"
# GOFLAGS=-mod=mod lets `go build` fill go.sum for the weed package's own imports; -buildvcs=false
# because the copy is no git checkout.
export GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
dir="$(go mod download -json "$SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION" 2>>"$buildlog" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -n $dir && -d $dir ]] || die "go mod download failed (see $buildlog)"
src="$SEAWEEDFS_CACHE/src"
rm -rf "$src"; cp -r "$dir" "$src"; chmod -R u+w "$src"
( cd "$src" && go build -trimpath -ldflags "-s -w" -o "$WEED_BIN.tmp" ./weed ) >>"$buildlog" 2>&1 \
  || die "go build ./weed failed (see $buildlog)"
mv "$WEED_BIN.tmp" "$WEED_BIN"
rm -rf "$src"
touch "$SEAWEEDFS_CACHE/.complete"
log "built $("$WEED_BIN" version 2>/dev/null | head -n 1)"
echo "$WEED_BIN"
