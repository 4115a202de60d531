#!/usr/bin/env bash
# make bench: every benchmark, one after the other (never in parallel: they share 2 cores).
# Each script prints one summary line (figure last) and writes bench/results/<name>.md;
# this collects the summary lines, the machine and the date into bench/results/SUMMARY.md.
set -uo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((10 + $$ % 90))}
summary=bench/results/SUMMARY.md
machine="$(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), Python $(python -c 'import platform; print(platform.python_version())')"
{
  echo "# Benchmark summary"
  echo
  echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on: $machine"
  echo
  echo "| benchmark | summary (figure last) | seconds |"
  echo "|---|---|---|"
} > "$summary"
status=0
for script in streaming_ik accuracy_synthetic filters_jitter perception_fps markers_world_frame monocular_vs_multiview camera_fit_demo confidence_vs_error camera_fit_synthetic graph_latency ik_node_restart; do
  [ -f "bench/$script.py" ] || { echo "bench: $script.py missing"; echo "| $script | missing | |" >> "$summary"; continue; }
  t0=$SECONDS
  echo "bench: $script"
  if line=$(python "bench/$script.py" 2> "bench/results/$script.log" | tee /dev/stderr | tail -1); then
    echo "| $script | $line | $((SECONDS - t0)) |" >> "$summary"
  else
    echo "| $script | FAILED (see bench/results/$script.log) | $((SECONDS - t0)) |" >> "$summary"; status=1
  fi
done
cat "$summary"
exit $status
