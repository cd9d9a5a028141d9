#!/usr/bin/env bash
# Build the rosidl interface packages under interfaces/ with plain cmake straight into a venv.
# Usage: tools/build_interfaces.sh VENV BUILD_DIR
# Copies of other projects' packages (tools/copied_interfaces.py list) follow one rule: ours is
# built where none is installed (or the installed one is an earlier build of ours); a real one
# is used instead, after checking it field for field against our copy (a difference fails here).
set -euo pipefail
venv=$(cd "$1" && pwd)
mkdir -p "$2"; build=$(cd "$2" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
py="$venv/bin/python3"
copied="$here/tools/copied_interfaces.py"

"$py" "$here/tools/fix_ros_cmake_paths.py" "$venv"

build_package() {
  local pkg=$1
  echo "build_interfaces: building $pkg"
  cmake -S "$here/interfaces/$pkg" -B "$build/$pkg" \
    -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
    -DPython3_EXECUTABLE="$py" -DBUILD_TESTING=OFF >"$build/$pkg.configure.log" 2>&1 \
    || { cat "$build/$pkg.configure.log"; exit 1; }
  cmake --build "$build/$pkg" -j2 >"$build/$pkg.build.log" 2>&1 \
    || { tail -50 "$build/$pkg.build.log"; exit 1; }
  cmake --install "$build/$pkg" >"$build/$pkg.install.log" 2>&1 \
    || { cat "$build/$pkg.install.log"; exit 1; }
}

mapfile -t copied_packages < <("$py" "$copied" list)
for pkg in "${copied_packages[@]}"; do
  decision=$("$py" "$copied" state "$pkg")  # exits 2 (and says why) on an incompatible one
  if [ "$decision" = use ]; then
    echo "build_interfaces: $pkg is installed and matches interfaces/$pkg; not building our copy"
  else
    build_package "$pkg"
  fi
done
build_package av_td3_msgs

"$py" "$copied" check
"$py" -c "import av_td3_msgs.msg; print('build_interfaces: av_td3_msgs imports')"
