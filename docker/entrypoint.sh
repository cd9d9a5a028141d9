#!/usr/bin/env bash
# Entrypoint of the av_td3_ros images: source ROS 2, this workspace and (in the bridge image) the
# CARLA ROS bridge workspace, then run the command. Healthchecks call it too, so they see the
# same environment as the service.
set -eo pipefail
# shellcheck disable=SC1090,SC1091
source "/opt/ros/${ROS_DISTRO:-humble}/setup.bash"
# shellcheck disable=SC1090,SC1091
source "${AV_TD3_WS:-/opt/av_td3_ros}/install/setup.bash"
if [ -n "${BRIDGE_WS:-}" ] && [ -f "${BRIDGE_WS}/install/setup.bash" ]; then
  # shellcheck disable=SC1090,SC1091
  source "${BRIDGE_WS}/install/setup.bash"
fi
exec "$@"
