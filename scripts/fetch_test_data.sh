#!/usr/bin/env bash
# Fill the git-ignored cache with the real test videos: the Pose2Sim single-person demo
# (4 views, 60 fps, BSD-3) ships inside the pose2sim wheel on PyPI. Never committed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SAM4DCAP_CACHE:-$root/.cache}
dest=$cache/pose2sim_demo
if [ -f "$dest/.complete" ]; then echo "  test data: cached in $dest"; exit 0; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"${VIRTUAL_ENV:-$root/.venv}/bin/python" -m pip download -q --no-deps pose2sim==0.10.49 -d "$tmp" 2>&1 | { grep -v "^WARNING: Location" || true; }
mkdir -p "$dest"
"${VIRTUAL_ENV:-$root/.venv}/bin/python" - "$tmp"/pose2sim-0.10.49-py3-none-any.whl "$dest" <<'PY'
import sys, zipfile, pathlib
whl, dest = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "Pose2Sim/Demo_SinglePerson/"
keep = ("videos/", "calibration/Calib.qca.txt", "Config.toml")
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        rel = n[len(prefix):]
        if n.startswith(prefix) and rel.startswith(keep) and not n.endswith("/"):
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(n))
PY
printf 'Pose2Sim Demo_SinglePerson from pose2sim==0.10.49 (BSD-3-Clause)\n' > "$dest/SOURCE.txt"
touch "$dest/.complete"
echo "  test data: pose2sim demo videos into $dest"
