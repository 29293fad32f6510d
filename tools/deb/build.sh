#!/usr/bin/env bash
# tools/deb/build.sh — `make deb`: build/access_<version>_<arch>.deb with
# dpkg-deb from a staged tree (docs/decisions.md, "Debian package").
#
#   tools/deb/build.sh BINARY
#
# BINARY is an access.fcgi built with dpkg-buildflags (the GNUmakefile's deb
# target builds it under build/deb/obj); it is stripped into the package.
# The staged tree is build/deb/root; the package goes to build/.
set -euo pipefail
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$ROOT"
HERE=tools/deb
BIN=${1:?usage: tools/deb/build.sh BINARY}
[[ -x $BIN ]] || {
	echo "deb: $BIN is not built" >&2
	exit 1
}

# ---- version: git describe mapped to a Debian version (starts with a digit)
# A tag vX.Y.Z gives X.Y.Z(+gitN.SHA when past it); without one, the base is
# the SPEC version (0.2.0) plus the commit date and hash. A dirty tree says so.
# Example: 0.2.0+git20261201.17078de-1
BASE=0.2.0
sha=$(git rev-parse --short=7 HEAD)
date=$(git log -1 --format=%cd --date=format:%Y%m%d HEAD)
if desc=$(git describe --tags --match 'v[0-9]*' --long 2>/dev/null); then
	# v1.2.3-N-gSHA
	tag=${desc%-*-g*}
	n=${desc%-g*}
	n=${n##*-}
	VERSION=${tag#v}
	((n == 0)) || VERSION+="+git$date.$n.$sha"
else
	VERSION="$BASE+git$date.$sha"
fi
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
	VERSION+=".dirty"
fi
# Debian revision 1: the packaging is not the upstream tree's own (a native
# version would want changelog.gz, not changelog.Debian.gz).
VERSION+="-1"
ARCH=$(dpkg --print-architecture)
PKG=build/access_${VERSION}_${ARCH}.deb
# Reproducible timestamps: the commit's time.
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct HEAD)
export SOURCE_DATE_EPOCH

# ---- stage
STAGE=build/deb/root
rm -rf "$STAGE"
mkdir -p "$STAGE/DEBIAN" "$STAGE/usr/sbin" "$STAGE/usr/share/access" \
	"$STAGE/usr/share/doc/access" "$STAGE/lib/systemd/system" "$STAGE/etc/access"

install -m 0755 "$BIN" "$STAGE/usr/sbin/access.fcgi"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$STAGE/usr/sbin/access.fcgi"

# conf/ (nginx, lighttpd, systemd, the documented defaults) and sql/, as in the tree.
cp -r conf "$STAGE/usr/share/access/conf"
cp -r sql "$STAGE/usr/share/access/sql"
find "$STAGE/usr/share/access" -type d -exec chmod 0755 {} +
find "$STAGE/usr/share/access" -type f -exec chmod 0644 {} +
install -m 0644 conf/systemd/access.service "$STAGE/lib/systemd/system/access.service"

# The conffile: the documented defaults with the production spool path
# and the secrets key postinst creates.
for k in audit_spool secrets_key; do
	grep -q "^$k =" conf/access.conf || {
		echo "deb: conf/access.conf has no $k line to rewrite" >&2
		exit 1
	}
done
sed -e 's|^audit_spool = .*|audit_spool = /var/lib/access/audit.spool|' \
	-e 's|^secrets_key =.*|secrets_key = /etc/access/secrets.key|' \
	-e '1s|.*|# /etc/access/access.conf — the access service (SPEC §3), from the Debian package.|' \
	conf/access.conf >"$STAGE/etc/access/access.conf"
chmod 0644 "$STAGE/etc/access/access.conf"

install -m 0644 README.md "$STAGE/usr/share/doc/access/README.md"
mkdir -p "$STAGE/usr/share/man/man8"
gzip -9n <"$HERE/access.fcgi.8" >"$STAGE/usr/share/man/man8/access.fcgi.8.gz"
chmod 0644 "$STAGE/usr/share/man/man8/access.fcgi.8.gz"
install -m 0644 "$HERE/copyright" "$STAGE/usr/share/doc/access/copyright"
{
	printf 'access (%s) unstable; urgency=medium\n\n' "$VERSION"
	printf '  * Built by make deb from git commit %s.\n\n' "$(git rev-parse HEAD)"
	printf ' -- %s  %s\n' "$(sed -n 's/^Maintainer: //p' "$HERE/control.in")" \
		"$(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$STAGE/usr/share/doc/access/changelog.Debian.gz"
chmod 0644 "$STAGE/usr/share/doc/access/changelog.Debian.gz"

for s in postinst prerm postrm; do
	install -m 0755 "$HERE/$s" "$STAGE/DEBIAN/$s"
done
printf '/etc/access/access.conf\n' >"$STAGE/DEBIAN/conffiles"
chmod 0644 "$STAGE/DEBIAN/conffiles"

# ---- Depends: dpkg-shlibdeps on the binary (it wants a debian/control to
# read, so it runs in a scratch directory holding a minimal one).
SH=build/deb/shlibdeps
rm -rf "$SH"
mkdir -p "$SH/debian"
printf 'Source: access\n\nPackage: access\nArchitecture: any\n' >"$SH/debian/control"
abs_bin=$ROOT/$STAGE/usr/sbin/access.fcgi
shlibs=$(cd "$SH" && dpkg-shlibdeps -O "$abs_bin" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[[ -n $shlibs ]] || {
	echo "deb: dpkg-shlibdeps found no dependencies" >&2
	exit 1
}
for lib in libfcgi0ldbl libpq5 libhiredis0.14 libsodium23 libargon2-1 libjson-c5; do
	[[ $shlibs == *"$lib"* ]] || {
		echo "deb: dpkg-shlibdeps did not name $lib: $shlibs" >&2
		exit 1
	}
done

size=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s|@VERSION@|$VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@SIZE@|$size|" \
	-e "s|@SHLIBS@|$shlibs|" "$HERE/control.in" >"$STAGE/DEBIAN/control"
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
	xargs -0 md5sum) >"$STAGE/DEBIAN/md5sums"
chmod 0644 "$STAGE/DEBIAN/control" "$STAGE/DEBIAN/md5sums"

rm -f build/access_*.deb
find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$PKG" >/dev/null
echo "deb: $PKG"
dpkg-deb --info "$PKG" | sed -n 's/^ \(Version\|Depends\|Installed-Size\):/  \1:/p'
