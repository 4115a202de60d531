# Source this file to use the project venv by hand: `. scripts/env.sh`.
# Make targets, tests and CI set the same variables.
_sam4dcap_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
# shellcheck disable=SC1091
. "$_sam4dcap_root/.venv/bin/activate"
# Fast DDS otherwise multicasts discovery out of every network interface; on these machines no
# DDS traffic may leave loopback (ROS_LOCALHOST_ONLY is ignored in Kilted).
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
# Shared-memory transport with a 64 MB segment: full-HD images across processes arrive intact
# (default transports lose most of them); see config/fastdds_profiles.xml.
export FASTDDS_DEFAULT_PROFILES_FILE="$_sam4dcap_root/config/fastdds_profiles.xml"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export SAM4DCAP_CACHE="${SAM4DCAP_CACHE:-$_sam4dcap_root/.cache}"
unset _sam4dcap_root
