#!/usr/bin/env bash
# Source ROS 2 and the rise workspace, then run the command (default: the bringup launch).
set -e
source "/opt/ros/${ROS_DISTRO}/setup.bash"
source /ws/install/setup.bash
exec "$@"
