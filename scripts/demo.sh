#!/usr/bin/env bash
# make demo: the main job on the embedded default (CPU, BlazePose) on a real video:
#   1. offline: video -> world-frame markers (.trc) -> scaled model -> IK (.mot) -> report
#   2. live: the same video through the ROS 2 node graph -> JointState topics, recorded to mcap
# Environment: DEMO_VIDEO, DEMO_HEIGHT_M, DEMO_MASS_KG, DEMO_OUT override the defaults.
set -uo pipefail
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((10 + $$ % 90))}
video=${DEMO_VIDEO:-${SAM4DCAP_CACHE:-.cache}/pose2sim_demo/videos/cam01.mp4}
# The Pose2Sim demo subject's height is not published; 1.70 m is Pose2Sim's own default.
height=${DEMO_HEIGHT_M:-1.70}
mass=${DEMO_MASS_KG:-70}
out=${DEMO_OUT:-out/demo}
mkdir -p "$out"
failed=()

stage() {  # stage NAME CMD...: run one stage, report its time, keep going on failure
  local name=$1; shift
  local t0=$SECONDS
  echo "demo: [$name] $*"
  if "$@"; then echo "demo: [$name] ok in $((SECONDS - t0)) s"
  else echo "demo: [$name] FAILED (exit $?)"; failed+=("$name"); fi
}

stage offline sam4dcap process "$video" --height "$height" --mass "$mass" --out "$out/offline"
stage live sam4dcap graph --video "$video" --height "$height" --mass "$mass" --record "$out/bag"

echo
echo "demo: outputs under $out/"
[ -f "$out/offline/report.html" ] && echo "  report:        $out/offline/report.html"
ls "$out"/offline/*.mot 2>/dev/null | sed 's/^/  joint angles:  /'
[ -d "$out/bag" ] && echo "  rosbag (mcap): $out/bag"
if [ ${#failed[@]} -gt 0 ]; then
  echo "demo: stages that failed: ${failed[*]}"; exit 1
fi
echo "demo: all stages ran"
