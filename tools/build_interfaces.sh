#!/usr/bin/env bash
# Build the rosidl interface packages under interfaces/ with plain cmake straight into a venv.
# Usage: tools/build_interfaces.sh VENV BUILD_DIR
# carla_msgs is skipped where one is importable already (a real bridge install provides it).
set -euo pipefail
venv=$(cd "$1" && pwd)
mkdir -p "$2"; build=$(cd "$2" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
py="$venv/bin/python3"

"$py" "$here/tools/fix_ros_cmake_paths.py" "$venv"

for pkg in carla_msgs av_td3_msgs; do
  if [ "$pkg" = carla_msgs ] && [ ! -f "$build/$pkg/.built-by-us" ] \
      && "$py" -c "import carla_msgs.msg" 2>/dev/null; then
    echo "build_interfaces: carla_msgs is importable already; not building our copy"
    continue
  fi
  echo "build_interfaces: building $pkg"
  cmake -S "$here/interfaces/$pkg" -B "$build/$pkg" \
    -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
    -DPython3_EXECUTABLE="$py" -DBUILD_TESTING=OFF >"$build/$pkg.configure.log" 2>&1 \
    || { cat "$build/$pkg.configure.log"; exit 1; }
  cmake --build "$build/$pkg" -j2 >"$build/$pkg.build.log" 2>&1 \
    || { tail -50 "$build/$pkg.build.log"; exit 1; }
  cmake --install "$build/$pkg" >"$build/$pkg.install.log" 2>&1 \
    || { cat "$build/$pkg.install.log"; exit 1; }
  touch "$build/$pkg/.built-by-us"
done
"$py" -c "import carla_msgs.msg, av_td3_msgs.msg; print('build_interfaces: carla_msgs and av_td3_msgs import')"
