#!/usr/bin/env bash
# Installs the Debian packages that fwcluster needs, only those that are missing.
# Safe to run any number of times; needs root on Debian 12.
set -euo pipefail

PACKAGES=(
  iproute2 iptables nftables          # namespaces, links, steering, NFQUEUE rules, kernel baseline
  libnetfilter-queue-dev              # headers NetfilterQueue builds against
  nginx-light                         # the study's web server (1-byte index.html)
  redis-server redis-sentinel         # the shared state store (primary, replicas, Sentinel)
  curl iputils-ping tcpdump procps psmisc  # real clients and captures for demo and tests
  iperf3                              # bulk TCP throughput (bench bulk)
  keepalived conntrackd               # the failover baseline (bench failover --baseline conntrackd)
  build-essential python3-dev python3-venv # to build the virtualenv and C extensions
  systemd                             # systemd-analyze verify of deploy/*.service (tests/unit/test_deploy.py)
)

missing=()
for p in "${PACKAGES[@]}"; do
  [[ "$p" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system: missing Debian packages (${missing[*]}); run as root" >&2
  exit 1
fi
echo "install-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the services on install; the testbed runs its own copies inside namespaces
# (a host conntrackd would sync the host's own conntrack table).
for svc in nginx redis-server iperf3 redis-sentinel keepalived conntrackd; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done
