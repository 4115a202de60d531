#!/usr/bin/env bash
# Build a rosidl interface package with plain cmake into the project venv (no colcon here).
# Usage: scripts/build_msgs.sh SOURCE_DIR BUILD_DIR
# Skips the build when the install stamp is newer than every source file (idempotent setup).
set -euo pipefail
src=$(cd "$1" && pwd); build=$2
venv=${VIRTUAL_ENV:?activate the project venv first}
name=$(basename "$src")
stamp="$build/.installed"
if [ -f "$stamp" ] && [ -z "$(find "$src" -newer "$stamp" -type f -not -path "*/test/*" | head -1)" ]; then
  echo "  $name: up to date"; exit 0
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$build"
export AMENT_PREFIX_PATH="$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$venv/bin/python" \
  -DCMAKE_PROJECT_INCLUDE="$here/cmake/strip_wheel_include_dirs.cmake" \
  -DBUILD_TESTING=OFF >"$build/configure.log" 2>&1 || { tail -30 "$build/configure.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" >"$build/build.log" 2>&1 || { tail -30 "$build/build.log"; exit 1; }
cmake --install "$build" >"$build/install.log" 2>&1 || { tail -30 "$build/install.log"; exit 1; }
touch "$stamp"
echo "  $name: built and installed into $venv"
