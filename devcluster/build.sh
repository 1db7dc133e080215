#!/usr/bin/env bash
# Build the devcluster's Kubernetes binaries (see docs/devcluster.md): kube-apiserver, etcd,
# kube-scheduler, kube-controller-manager, kubelet and kubectl, all from the one release in go.mod,
# and our own commands in cmd/ (pause, s3-csi-standin).
#
# Binaries go to $STUDIO_DEVCLUSTER_CACHE/<sha256 of go.sum>/bin/ (default cache:
# ~/.cache/studio-spawner/devcluster). Nothing is rebuilt when all exist and our own commands are
# newer than their sources; otherwise only the missing or stale ones are built.
# Prints the bin directory as its last line of output. Needs only Go and the Go module proxy.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${STUDIO_DEVCLUSTER_CACHE:-$HOME/.cache/studio-spawner/devcluster}"
if command -v sha256sum >/dev/null 2>&1; then
    key="$(sha256sum "$here/go.sum" | cut -c1-16)"
else
    key="$(shasum -a 256 "$here/go.sum" | cut -c1-16)"
fi
bin="$cache/$key/bin"
BINARIES="kube-apiserver etcd kube-scheduler kube-controller-manager kubelet kubectl pause"
BINARIES="$BINARIES s3-csi-standin"

current() {  # current <name>: built, and (for a command of ours) newer than cmd/<name> and go.mod
    [ -x "$bin/$1" ] || return 1
    [ -d "$here/cmd/$1" ] || return 0
    [ -z "$(find "$here/cmd/$1" "$here/go.mod" -newer "$bin/$1" -print -quit)" ]
}

built() {
    local name
    for name in $BINARIES; do current "$name" || return 0; done
    echo "devcluster: binaries already built in $bin" >&2
    echo "$bin"
    exit 0
}
built
mkdir -p "$cache/$key"
if command -v flock >/dev/null 2>&1; then  # one build at a time; a waiter reuses its result
    exec 9>"$cache/$key/build.lock"
    flock -n 9 || { echo "devcluster: waiting for another build to finish..." >&2; flock 9; }
    built
fi

if ! command -v go >/dev/null 2>&1; then
    for g in /usr/local/go/bin /usr/lib/go/bin "$HOME/go/bin"; do
        [ -x "$g/go" ] && PATH="$PATH:$g" && break
    done
fi
command -v go >/dev/null 2>&1 || { echo "devcluster: 'go' not found in PATH" >&2; exit 1; }

cd "$here"
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -trimpath -mod=readonly"

k8s_version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
etcd_version="$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
major="${k8s_version#v}"; major="${major%%.*}"
minor="${k8s_version#v*.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major"
    ldflags="$ldflags -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    ldflags="$ldflags -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

tmp="$cache/$key/bin.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"

# go build -v prints one line per compiled package; turn that into periodic progress lines.
progress() {
    awk -v name="$1" '
        function now() { srand(); return srand() }  # portable "current time"
        BEGIN { last = now() }
        /^(go: |#|.*\.go:[0-9]+)/ { print; fflush(); next }
        { n++; t = now()
          if (t - last >= 20) { printf "devcluster: still building %s... %d packages\n", name, n; fflush(); last = t } }
        END { printf "devcluster: %s: %d packages compiled\n", name, n }' >&2
}

build() {  # build <output name> <package> <ldflags>; a current binary is kept as it is
    local start=$SECONDS
    if current "$1"; then
        ln "$bin/$1" "$tmp/$1" 2>/dev/null || cp -p "$bin/$1" "$tmp/$1"
        return
    fi
    echo "devcluster: building $1 ($2)..." >&2
    go build -v -ldflags "$3" -o "$tmp/$1" "$2" 2>&1 | progress "$1"
    echo "devcluster: built $1 in $((SECONDS - start))s" >&2
}

echo "devcluster: Kubernetes $k8s_version, etcd $etcd_version -> $bin (this takes a while)" >&2
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$ldflags"
build etcd go.etcd.io/etcd/server/v3 "-s -w"
for cmd in kube-scheduler kube-controller-manager kubelet kubectl; do
    build "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$ldflags"
done
build pause ./cmd/pause "-s -w"   # the pod sandbox image's only file
build s3-csi-standin ./cmd/s3-csi-standin "-s -w"   # the node's stand-in S3 CSI plugin

"$tmp/kube-apiserver" --version >&2
"$tmp/etcd" --version >&2
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "$bin"
