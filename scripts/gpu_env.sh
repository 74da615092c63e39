#!/usr/bin/env bash
# Device side (sourced): unpacks the Debian packages carried in .deps/ (scripts/fetch_device_debs.sh)
# into a prefix under /tmp and exports what CMake, the compilers and the loader need to find them.
# Then `veda_configure BUILD_DIR [cmake args...]` configures the project against them.
VEDA_DEPS_PREFIX=${VEDA_DEPS_PREFIX:-/tmp/veda-deps}
_veda_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$VEDA_DEPS_PREFIX/.unpacked"
for deb in "$_veda_root"/.deps/*.deb; do  # each package once per machine (a warm one keeps them)
  mark="$VEDA_DEPS_PREFIX/.unpacked/$(basename "$deb")"
  [ -f "$mark" ] || { dpkg -x "$deb" "$VEDA_DEPS_PREFIX" && touch "$mark"; }
done
_lib="$VEDA_DEPS_PREFIX/usr/lib/x86_64-linux-gnu"
_blas="$_lib/openblas-pthread"
# The Debian alternatives links (libblas.so.3 -> openblas) are not unpacked: name the files.
ln -sf "$_blas/libblas.so.3" "$_blas/libblas.so" 2>/dev/null || true
export CPATH="$VEDA_DEPS_PREFIX/usr/include:$VEDA_DEPS_PREFIX/usr/include/x86_64-linux-gnu/openblas-pthread${CPATH:+:$CPATH}"
export LD_LIBRARY_PATH="$_lib:$_blas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LIBRARY_PATH="$_lib:$_blas${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CMAKE_PREFIX_PATH="$VEDA_DEPS_PREFIX/usr:$VEDA_DEPS_PREFIX/usr/lib/x86_64-linux-gnu/cmake:$VEDA_DEPS_PREFIX/usr/share/cmake${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"

veda_configure() {
  local build="$1"; shift
  cmake -S "$_veda_root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVEDA_CUDA=ON \
    -DBLAS_LIBRARIES="$_blas/libopenblas.so.0" \
    -Dnlohmann_json_DIR="$VEDA_DEPS_PREFIX/usr/share/cmake/nlohmann_json" \
    -DCLI11_DIR="$VEDA_DEPS_PREFIX/usr/share/cmake/CLI11" \
    -Dfmt_DIR="$_lib/cmake/fmt" -DGTest_DIR="$_lib/cmake/GTest" "$@"
}
