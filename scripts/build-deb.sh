#!/bin/bash
# make deb: build dist/virtnet_<version>_<arch>.deb with debhelper (debian/), as root.
#
# Installs the build dependencies debian/control names when they are missing (apt-get
# build-dep on the source tree), builds from a copy of the worktree under build/deb (so that
# dpkg-buildpackage writes nothing beside the checkout) and copies the .deb to dist/.
# Building needs the network: the private Python environment comes from PyPI (debian/rules).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ "$(id -u)" != 0 ]; then
    echo "make deb: run as root (it installs debhelper and the build dependencies)" >&2
    exit 1
fi

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' src/virtnet/__init__.py)
changelog=$(sed -n '1s/^virtnet (\([^)]*\)).*/\1/p' debian/changelog)
if [ "$version" != "$changelog" ]; then
    echo "make deb: virtnet.__version__ is $version but debian/changelog says $changelog;" \
         "add a changelog entry for $version" >&2
    exit 1
fi

start=$(date +%s)
if ! command -v dpkg-checkbuilddeps >/dev/null || ! dpkg-checkbuilddeps debian/control 2>/dev/null; then
    echo "make deb: installing the build dependencies"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq --no-install-recommends "$root" >/dev/null
fi

# The tracked files and new ones not ignored: what a commit of this tree would hold.
stage=build/deb
src=$stage/virtnet-$version
rm -rf "$stage"
mkdir -p "$src"
git ls-files -z --cached --others --exclude-standard \
    | (while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) \
    | tar --null -T - -cf - | tar -xf - -C "$src"

(cd "$src" && dpkg-buildpackage -b -us -uc --no-sign)

arch=$(dpkg --print-architecture)
deb=virtnet_${version}_${arch}.deb
mkdir -p dist
cp "$stage/$deb" dist/
end=$(date +%s)
echo "make deb: dist/$deb, $(du -k "dist/$deb" | cut -f1) KiB, built in $((end - start)) s"
