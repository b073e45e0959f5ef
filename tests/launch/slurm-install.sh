#!/usr/bin/env bash
# tests/launch/slurm-install.sh: installs what tests/launch/test_slurm.sh needs, a real SLURM (Debian's
# slurm-wlm: slurmctld, slurmd and the client commands, with the PMIx plugin) and munge (its
# authentication), when missing. Only the test needs them, so they are not in launch/setup.sh's list;
# .ci/run calls this. Needs root (or sudo); does nothing when both are installed.
set -euo pipefail
missing=()
for p in slurm-wlm munge; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -gt 0 ] || exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
echo "slurm-install: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
