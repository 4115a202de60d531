#!/usr/bin/env bash
# Fill the git-ignored cache with the real test videos: the Pose2Sim single-person demo and
# multi-person demo (4 views each, 60 fps, BSD-3) ship inside the pose2sim wheel on PyPI.
# Never committed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SAM4DCAP_CACHE:-$root/.cache}
single=$cache/pose2sim_demo
multi=$cache/pose2sim_multi
if [ -f "$single/.complete" ] && [ -f "$multi/.complete" ]; then
  echo "  test data: cached in $single, $multi"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"${VIRTUAL_ENV:-$root/.venv}/bin/python" -m pip download -q --no-deps pose2sim==0.10.49 -d "$tmp" 2>&1 | { grep -v "^WARNING: Location" || true; }
"${VIRTUAL_ENV:-$root/.venv}/bin/python" - "$tmp"/pose2sim-0.10.49-py3-none-any.whl "$single" "$multi" <<'PY'
import sys, zipfile, pathlib
whl = sys.argv[1]
demos = {"Pose2Sim/Demo_SinglePerson/": pathlib.Path(sys.argv[2]),
         "Pose2Sim/Demo_MultiPerson/": pathlib.Path(sys.argv[3])}
keep = ("videos/", "calibration/Calib.qca.txt", "Config.toml")
with zipfile.ZipFile(whl) as z:
    for prefix, dest in demos.items():
        if (dest / ".complete").is_file():
            continue
        for n in z.namelist():
            rel = n[len(prefix):]
            if n.startswith(prefix) and rel.startswith(keep) and not n.endswith("/"):
                out = dest / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(z.read(n))
        name = prefix.split("/")[1]
        (dest / "SOURCE.txt").write_text(f"Pose2Sim {name} from pose2sim==0.10.49 (BSD-3-Clause)\n")
        (dest / ".complete").touch()
PY
echo "  test data: pose2sim demo videos into $single, $multi"
