#!/usr/bin/env bash
# Installs what the test suite drives besides our own binary, when it is missing:
#   Debian: a C compiler and curl (build), prosody + prosody-modules and ejabberd (XMPP servers
#   of tests/xmpp_interop.rs), chromium (tests/browser_cors.rs), nginx-light and openssl
#   (tests/reverse_proxy.rs), logrotate and systemd-analyze (tests/contrib.rs);
#   PyPI: slixmpp and aiohttp (the XMPP client) and prometheus-client (the reference
#   exposition parser), tuspy (tus client), pinned in tests/interop/requirements.txt.
# Installing the Debian packages does not need their system services: the tests start private
# instances on free loopback ports from throwaway directories.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v prosody >/dev/null 2>&1 || need+=(prosody)
[ -f /usr/lib/prosody/modules/mod_http_upload_external/mod_http_upload_external.lua ] || need+=(prosody-modules)
# Prosody warns at every start without it.
dpkg -s lua-unbound >/dev/null 2>&1 || need+=(lua-unbound)
ls -d /usr/lib/*/ejabberd-* >/dev/null 2>&1 || need+=(ejabberd)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
# contrib/ checks (tests/contrib.rs).
[ -x /usr/sbin/logrotate ] || need+=(logrotate)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# promtool and a real Prometheus server (tests/metrics.rs).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if ! python3 -c "import slixmpp, aiohttp, prometheus_client, tusclient" >/dev/null 2>&1; then
  echo "install-deps: pip install -r tests/interop/requirements.txt"
  python3 -m pip install -q -r tests/interop/requirements.txt
fi
