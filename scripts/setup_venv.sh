#!/usr/bin/env bash
# Sets up everything `rise` needs on a machine without ROS 2, on first use:
#   - Debian packages for headless MuJoCo rendering (EGL), when missing and we are root;
#   - the project venv at .venv (pinned ROS 2 Kilted wheels, torch==2.13.0, the rest) and
#     `pip install -e .` of this package.
# A repeat run reuses .venv unless requirements/, setup.py or setup.cfg changed. Safe to run
# from two shells at once (a lock file serialises the setup).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${RISE_PYTHON:-python3}

say() { echo "[rise setup] $*" >&2; }

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  say "error: needs Python >= 3.10 (set RISE_PYTHON to one); found: $("$python" --version 2>&1 || echo none)"
  exit 1
fi

# Headless rendering for the simulator: EGL through Mesa (software rendering works without a GPU).
egl_packages=(libegl1 libegl-mesa0 libgl1-mesa-dri)
if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for pkg in "${egl_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
      say "installing ${missing[*]} (headless rendering for the simulator)"
      apt-get update -qq >/dev/null && \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      say "warning: simulator rendering needs: sudo apt-get install ${missing[*]}"
    fi
  fi
fi

# The ROS 2 launch tooling (launch, launch_ros, launch_testing, ros2launch: not on any registry),
# when its wheels are at hand: $RISE_ROS2_LAUNCH_WHEELS, else ../shared/wheels/ros2-launch beside
# this checkout, else beside the local checkout this one was cloned from. Without them the tests
# of the real `ros2 launch` skip, saying so.
launch_wheels=${RISE_ROS2_LAUNCH_WHEELS:-}
if [[ -z $launch_wheels ]]; then
  origin=$(git -C "$root" config --get remote.origin.url 2>/dev/null || true)
  for candidate in "$root/../shared/wheels/ros2-launch" ${origin:+"$origin/../shared/wheels/ros2-launch"}; do
    if compgen -G "$candidate/launch_ros-*.whl" >/dev/null; then
      launch_wheels=$(cd "$candidate" && pwd)
      break
    fi
  done
fi
launch_listing=""
[[ -n $launch_wheels ]] && launch_listing=$(ls "$launch_wheels"/*.whl)

stamp=$(cat "$root"/requirements/*.txt "$root/setup.py" "$root/setup.cfg" | sha256sum | cut -c1-16)
stamp="$stamp $(echo "$launch_listing" | sha256sum | cut -c1-8)"
stamp="$stamp $("$python" -c 'import sys; print(sys.version.split()[0])')"

exec 9>"$root/.venv.lock"
flock 9
if [[ -f "$venv/.rise-stamp" && $(cat "$venv/.rise-stamp") == "$stamp" ]]; then
  exit 0
fi

say "setting up $venv (first run or changed requirements: about 2 minutes, 2.3 GB)"
started=$SECONDS
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
log="$venv/setup.log"
if ! { "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$root/requirements/venv.txt" &&
       "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps \
         --no-build-isolation -e "$root" &&
       if [[ -n $launch_wheels ]]; then
         echo "ROS 2 launch wheels from $launch_wheels" &&
         "$venv/bin/python" -m pip install --disable-pip-version-check -q \
           -r "$root/requirements/ros-launch.txt" &&
         "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps \
           "$launch_wheels"/*.whl
       fi; } >"$log" 2>&1; then
  grep -v "^WARNING: Location" "$log" | tail -n 30 >&2
  say "error: pip install failed; full log: $log"
  exit 1
fi
echo "$stamp" >"$venv/.rise-stamp"
if [[ -n $launch_wheels ]]; then
  say "ROS 2 launch tooling (ros2 launch, launch_testing) installed from $launch_wheels"
else
  say "no ROS 2 launch wheels found (\$RISE_ROS2_LAUNCH_WHEELS, ../shared/wheels/ros2-launch): the real-launch tests will skip"
fi
say "ready in $((SECONDS - started)) s"
