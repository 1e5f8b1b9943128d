#!/usr/bin/env bash
# Installs what the test suite drives besides our own binary, when it is missing:
#   Debian: a C compiler and curl (build), prosody + prosody-modules and ejabberd (XMPP servers
#   of tests/xmpp_interop.rs), chromium (tests/browser_cors.rs), nginx-light and openssl
#   (tests/reverse_proxy.rs), logrotate and systemd-analyze (tests/contrib.rs), man-db;
#   crates.io: cargo-deb (tests/debian_package.rs);
#   PyPI: slixmpp and aiohttp (the XMPP client) and prometheus-client (the reference
#   exposition parser), tuspy (tus client), pinned in tests/interop/requirements.txt.
# Installing the Debian packages does not need their system services: the tests start private
# instances on free loopback ports from throwaway directories.
set -euo pipefail
need2=()
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
# The system calls the server makes, checked against the unit's filter (tests/contrib.rs).
command -v strace >/dev/null 2>&1 || need+=(strace)
# Routes a test IPv6 prefix to lo, so per-/64 limits can be tried (tests/limits.rs).
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# Renders the man pages (tests/cli.rs, tests/debian_package.rs).
command -v man >/dev/null 2>&1 || need+=(man-db)
# Runs a Prosody with its clock behind ours, so its tokens arrive expired (tests/prosody_file_share.rs).
command -v faketime >/dev/null 2>&1 || need+=(faketime)
# ext4 on a loop device, to provoke write errors in the kernel's writeback (tests/disk.rs).
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || need+=(mount)
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The session stores of tests/tus.rs and tests/session_stores.rs: the local PostgreSQL
# (127.0.0.1:5432, trust, database test), MariaDB (127.0.0.1:3306, root) and redis-server
# (the tests start private Redis instances from it).
command -v redis-server >/dev/null 2>&1 || need2+=(redis-server)
command -v psql >/dev/null 2>&1 || need2+=(postgresql)
command -v mysql >/dev/null 2>&1 || need2+=(mariadb-server)
if [ ${#need2[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need2[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need2[@]}"
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "install-deps: starting PostgreSQL"
  $sudo service postgresql start || true
fi
if ! mysqladmin -h 127.0.0.1 -u root ping >/dev/null 2>&1; then
  echo "install-deps: starting MariaDB"
  $sudo service mariadb start || $sudo service mysql start || true
fi

if ! python3 -c "import slixmpp, aiohttp, prometheus_client, tusclient" >/dev/null 2>&1; then
  echo "install-deps: pip install -r tests/interop/requirements.txt"
  python3 -m pip install -q -r tests/interop/requirements.txt
fi

# Builds the Debian package (tests/debian_package.rs); pinned, as its output is what the test checks.
if ! cargo deb --version 2>/dev/null | grep -q "3\.8\.0"; then
  echo "install-deps: cargo install cargo-deb"
  cargo install cargo-deb --version 3.8.0 --locked
fi
