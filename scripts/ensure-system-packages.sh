#!/bin/sh
# Debian packages the test suite needs. Installed when missing and we are root; otherwise
# the exact install command is printed and we fail, so nobody wonders why a test cannot start.
set -eu
# MQTT broker (issue 6), SSH target for tools/flash.py (issue 5); systemd-analyze and the systemd the agent's units
# run under in tests, libseccomp for the sandbox run without it, util-linux's setpriv/unshare/nsenter, and a Python
# the agent's unprivileged user may run (pyenv's lies under /root) (issue 17); an FTP server for firmware downloads
# and diagnostics uploads (issue 13)
PACKAGES="mosquitto openssh-server openssh-client systemd libseccomp2 util-linux passwd python3 vsftpd"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "installing system packages:$missing"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
else
    echo "missing system packages:$missing" >&2
    echo "install them with: sudo apt-get install -y$missing" >&2
    exit 1
fi
