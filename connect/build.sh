#!/usr/bin/env bash
# Build studio-connect, the authenticating proxy of tool studios (see docs/tools.md): a static
# binary (CGO off, standard library only).
#
# The binary goes to $STUDIO_CONNECT_CACHE/<sha256 of the module's sources>/studio-connect
# (default cache: ~/.cache/studio-spawner/connect). Nothing is rebuilt when it exists.
# Prints the binary's path as its last line of output. Needs only Go.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${STUDIO_CONNECT_CACHE:-$HOME/.cache/studio-spawner/connect}"
sources() {  # what the binary is built from: go.mod, go.sum (once there are modules), *.go
    cd "$here"
    if [ -f go.sum ]; then echo go.sum; fi
    ls go.mod ./*.go | grep -v '_test\.go$'
}
if command -v sha256sum >/dev/null 2>&1; then sum=(sha256sum); else sum=(shasum -a 256); fi
key="$(sources | sort | (cd "$here" && xargs "${sum[@]}") | "${sum[@]}" | cut -c1-16)"
binary="$cache/$key/studio-connect"
if [ -x "$binary" ]; then
    echo "$binary"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    for g in /usr/local/go/bin /usr/lib/go/bin "$HOME/go/bin"; do
        [ -x "$g/go" ] && PATH="$PATH:$g" && break
    done
fi
command -v go >/dev/null 2>&1 || { echo "connect: 'go' not found in PATH" >&2; exit 1; }

mkdir -p "$cache/$key"
tmp="$cache/$key/studio-connect.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$key" -o "$tmp" .)
mv "$tmp" "$binary"
trap - EXIT
echo "connect: built $binary" >&2
echo "$binary"
