#!/usr/bin/env bash
# One-command setup (make setup): venv with exact pins, the messages package, the two Python
# packages, the test video cache. Idempotent: a second run only checks and is fast.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
t0=$(date +%s)
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
done_steps=()
log=$root/build/setup.log
mkdir -p build; : > "$log"
# Run a step quietly; on failure show the end of its output.
quiet() { "$@" >>"$log" 2>&1 || { tail -40 "$log"; echo "setup: FAILED: $*  (full log: $log)"; exit 1; }; }

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv; done_steps+=("venv")
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST

req_stamp=.venv/.sam4dcap-requirements
want=$(cat requirements.txt requirements-mediapipe.txt | sha1sum | cut -d' ' -f1)
if [ "$(cat "$req_stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned requirements into .venv"
  quiet python -m pip install --upgrade pip
  quiet python -m pip install -r requirements.txt
  quiet python -m pip install --no-deps -r requirements-mediapipe.txt
  echo "$want" > "$req_stamp"; done_steps+=("requirements")
fi

# cmake comes from Debian (apt) on a fresh machine.
if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then
  echo "setup: installing cmake and g++ from Debian"
  quiet apt-get update; quiet apt-get install -y cmake g++; done_steps+=("cmake")
fi

echo "setup: interface packages"
if ! python -c "import tf2_msgs.msg" 2>/dev/null || [ -f build/tf2_msgs/.installed ]; then
  scripts/build_msgs.sh scripts/ros_shims/tf2_msgs build/tf2_msgs
fi
scripts/build_msgs.sh src/sam4dcap_msgs build/sam4dcap_msgs

pkg_stamp=.venv/.sam4dcap-packages
want=$(cat src/sam4dcap_biomech/setup.py src/sam4dcap_perception/setup.py | sha1sum | cut -d' ' -f1)
if [ "$(cat "$pkg_stamp" 2>/dev/null)" != "$want" ]; then
  # Editable: the source tree is what runs.
  quiet python -m pip install --no-deps --no-build-isolation -e src/sam4dcap_biomech -e src/sam4dcap_perception
  # Editable installs skip data_files: lay out the ament index and share/ as
  # `colcon build --symlink-install` would, so ament_index_python finds the packages.
  for pkg in sam4dcap_biomech sam4dcap_perception; do
    mkdir -p .venv/share/ament_index/resource_index/packages ".venv/share/$pkg"
    touch ".venv/share/ament_index/resource_index/packages/$pkg"
    ln -sfn "$root/src/$pkg/package.xml" ".venv/share/$pkg/package.xml"
  done
  # `ros2 run PKG EXE` / launch_ros look in <prefix>/lib/PKG/. These wrappers re-enter the venv
  # with a clean library path, so a system ROS (numpy 1 builds) can start our numpy-2 nodes.
  for pkg in sam4dcap_biomech sam4dcap_perception; do
    mkdir -p ".venv/lib/$pkg"
    for exe in $(sed -n 's/^ *"\([a-z0-9_]*\) = .*:main",$/\1/p' "src/$pkg/setup.py"); do
      printf '#!/bin/sh\nexec env -u LD_LIBRARY_PATH -u PYTHONPATH -u _ROS_WHEELS_BOOTSTRAP_COMPLETE "%s/.venv/bin/%s" "$@"\n' "$root" "$exe" > ".venv/lib/$pkg/$exe"
      chmod +x ".venv/lib/$pkg/$exe"
    done
  done
  echo "$want" > "$pkg_stamp"; done_steps+=("packages")
fi

# share/sam4dcap_perception as `colcon build --symlink-install` lays it out: real folders
# holding one symlink per file. ros2launch finds launch files with os.walk, which does not
# descend into symlinked folders (`ros2 launch` said "file ... was not found"). Every run: cheap,
# and new launch/config files appear without a reinstall.
share=.venv/share/sam4dcap_perception
for d in launch config rviz; do
  if [ -L "$share/$d" ]; then rm "$share/$d"; fi   # an older setup linked the folder itself
  mkdir -p "$share/$d"
  find "$share/$d" -maxdepth 1 -type l ! -exec test -e {} \; -delete   # files since removed
  for f in "$root/$d"/*; do
    if [ -f "$f" ]; then ln -sfn "$f" "$share/$d/$(basename "$f")"; fi
  done
done
ln -sfn "$root/src/sam4dcap_perception/sam4dcap_perception/graph.py" "$share/graph.py"
ln -sfn "$root/src/sam4dcap_biomech/sam4dcap_biomech/ros/topics.py" "$share/topics.py"   # graph.py imports it

scripts/fetch_test_data.sh 2> >(grep -v "^WARNING: Location" >&2)

t1=$(date +%s)
echo "setup: done in $((t1 - t0)) s (${done_steps[*]:-nothing to do}); use: . scripts/env.sh"
