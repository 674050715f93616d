# Sourced by deploy/stack.sh and deploy/seaweedfs/build.sh: the pinned SeaweedFS (the S3-compatible
# object store that keeps report media) and where its binary is cached. The Go module proxy serves it
# only under a pseudo-version; `go install …/weed@v` is refused (its go.mod has a `replace`), so the
# binary is built from a writable copy of the downloaded module (build.sh), once per version.
SEAWEEDFS_MODULE=github.com/seaweedfs/seaweedfs
SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
SEAWEEDFS_CACHE="${SEAWEEDFS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/crm-pipeline/seaweedfs-$SEAWEEDFS_VERSION}"
WEED_BIN="${WEED_BIN:-$SEAWEEDFS_CACHE/weed}"
