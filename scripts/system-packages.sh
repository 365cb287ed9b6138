#!/usr/bin/env bash
# Debian packages the project uses: Fashion-MNIST (a built-in dataset), wrk (the load
# generator of bench/predict_load.py) and Chromium (the dashboard's browser test).
# Installs only what is missing, so a machine that has them pays nothing.
set -euo pipefail
wanted=(dataset-fashion-mnist wrk chromium "$@")
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system-packages: missing ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "system-packages: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
