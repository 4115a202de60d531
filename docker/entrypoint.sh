#!/usr/bin/env bash
# Container entrypoint: the project venv's environment (scripts/env.sh), NOT /opt/ros's
# setup.bash: the image's ROS Python is built against numpy 1.26 and can't share a process
# with opensim 4.6 (numpy >= 2.1). The image's ROS CLI stays usable through /usr/local/bin/ros2.
set -e
# shellcheck disable=SC1091
. /opt/sam4dcap/scripts/env.sh
exec "$@"
