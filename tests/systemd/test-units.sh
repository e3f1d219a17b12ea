#!/bin/sh
# The systemd units of contrib/systemd, as an instance "vm1": they pass
# "systemd-analyze verify" (ExecStart pointed at the qbranchd just built),
# stay sandboxed ("systemd-analyze security" exposure at most 2.0 of 10),
# and keep the conventions the CLI and the documentation rely on. TAP;
# skipped when systemd-analyze is not installed.

srcdir=${srcdir:-.}
qbranchd=${QBRANCHD:-$PWD/qbranchd}
service=contrib/systemd/qbranchd@.service	# generated in the build tree
socket=$srcdir/contrib/systemd/qbranchd@.socket

if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "1..0 # SKIP systemd-analyze is not installed"
	exit 0
fi

n=0
point() {	# point STATUS TEXT [OUTPUT]
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		[ -z "$3" ] || printf '%s\n' "$3" | sed 's/^/# /'
	fi
}
has() {		# has FILE LINE: the file has exactly this line
	grep -qxF -- "$2" "$1"
	point $? "$(basename "$1"): $2"
}

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

grep -q '@sbindir@' "$service"
[ $? -ne 0 ]
point $? "the generated service names the installed qbranchd"
sed "s|^ExecStart=[^ ]*/qbranchd |ExecStart=$qbranchd |" "$service" \
    >"$tmp/qbranchd@vm1.service"
cp "$socket" "$tmp/qbranchd@vm1.socket"

# Unknown keys are only warnings to verify: any output is a failure here.
out=$(cd "$tmp" && systemd-analyze verify --man=no qbranchd@vm1.service \
    qbranchd@vm1.socket 2>&1)
rc=$?
[ $rc -eq 0 ] && [ -z "$out" ]
point $? "systemd-analyze verify: service and socket, no warning" "$out"

if systemd-analyze security --help 2>/dev/null | grep -q -- --offline; then
	out=$(systemd-analyze security --offline=yes --threshold=20 \
	    "$tmp/qbranchd@vm1.service" 2>&1)
	point $? "systemd-analyze security: exposure at most 2.0" \
	    "$(printf '%s\n' "$out" | tail -n 3)"
else
	n=$((n + 1))
	echo "ok $n - systemd-analyze security # SKIP no --offline"
fi

has "$socket" "ListenStream=/run/qbranchd/%i.sock"
has "$socket" "SocketMode=0600"
has "$service" "EnvironmentFile=/etc/qbranch/%i.env"
has "$service" "StateDirectory=qbranch/%i"
has "$service" "RuntimeDirectory=qbranchd"
has "$service" "RuntimeDirectoryPreserve=yes"
has "$service" "ProtectSystem=strict"
has "$service" "RestrictAddressFamilies=AF_UNIX"
has "$service" "NoNewPrivileges=yes"
echo "1..$n"
