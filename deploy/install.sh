#!/usr/bin/env bash
# Installs buzón from this checkout the way the shipped units expect it:
#   user and group `buzon` (system, no login), /opt/buzon/.venv (a virtualenv with this
#   checkout installed, not linked: the checkout may go away), /var/lib/buzon (0700, the
#   data dir), /var/log/buzon (supervisord's log files), /etc/buzon/buzon.toml (from
#   deploy/buzon.example.toml with data_dir = "/var/lib/buzon"; never overwritten), the
#   systemd units or the supervisord include, and the database schema.
#
#   sudo bash deploy/install.sh                      # systemd units (the default)
#   sudo bash deploy/install.sh --init supervisor    # /etc/supervisor/conf.d/buzon.conf
#   sudo bash deploy/install.sh --init supervisor --split   # one program per component
#   bash deploy/install.sh --prefix /tmp/root        # everything under a scratch root
#
# --prefix DIR (or DESTDIR=DIR) installs under DIR without touching the system: no user
# is created, nothing is chowned, no schema is created and systemctl is not called; the
# installed files still name /opt/buzon, /etc/buzon and /var/lib/buzon. For tests and
# for packaging. Safe to run again: it upgrades the venv and keeps the config.
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; }

PREFIX=${DESTDIR:-}
INIT=systemd
SPLIT=0
PYTHON=${PYTHON:-python3}
while (($#)); do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) PREFIX=${1#*=}; shift ;;
    --init) INIT=${2:?--init needs systemd, supervisor or none}; shift 2 ;;
    --init=*) INIT=${1#*=}; shift ;;
    --split) SPLIT=1; shift ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown argument $1" >&2; usage ;;
  esac
done
case "$INIT" in systemd|supervisor|none) ;; *) echo "install.sh: --init $INIT?" >&2; exit 64 ;; esac

CHECKOUT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX%/}
REAL=0; [ -z "$PREFIX" ] && REAL=1
if ((REAL)) && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (or give --prefix DIR for a scratch install)" >&2
  exit 77
fi

VENV=/opt/buzon/.venv
CONF=/etc/buzon/buzon.toml
DATA=/var/lib/buzon
LOGS=/var/log/buzon

say() { echo "install.sh: $*" >&2; }

# --- the service user -----------------------------------------------------------------
if ((REAL)); then
  if ! getent passwd buzon >/dev/null; then
    say "creating system user buzon"
    useradd --system --user-group --home-dir "$DATA" --no-create-home \
      --shell /usr/sbin/nologin --comment "buzón email-to-ticket daemon" buzon
  fi
  OWNER=(-o buzon -g buzon)
  GROUP=(-o root -g buzon)
else
  OWNER=()
  GROUP=()
fi

# --- the virtualenv -------------------------------------------------------------------
say "installing buzón into $PREFIX$VENV"
install -d -m 0755 "$PREFIX/opt/buzon"
[ -x "$PREFIX$VENV/bin/python" ] || "$PYTHON" -m venv "$PREFIX$VENV"
# From a copy: setuptools builds in the source tree (build/), and the checkout stays clean.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
tar -C "$CHECKOUT" --exclude=./.venv --exclude=./.git --exclude=./build --exclude='*.egg-info' \
  --exclude=./buzon-data -cf - . | tar -C "$src" -xf -
"$PREFIX$VENV/bin/python" -m pip install -q --upgrade "$src"

# --- directories and config -----------------------------------------------------------
install -d -m 0700 "${OWNER[@]}" "$PREFIX$DATA"
install -d -m 0750 "${OWNER[@]}" "$PREFIX$LOGS"
install -d -m 0750 "${GROUP[@]}" "$PREFIX/etc/buzon"
if [ -e "$PREFIX$CONF" ]; then
  say "keeping the existing $PREFIX$CONF"
  if grep -Eq '^data_dir *= *"[^/]' "$PREFIX$CONF"; then
    say "WARNING: data_dir in $CONF is relative; make it absolute (\"$DATA\")"
  fi
else
  say "writing $PREFIX$CONF (data_dir = \"$DATA\")"
  tmp=$(mktemp)
  sed "s|^data_dir = \"buzon-data\"|data_dir = \"$DATA\"|" "$CHECKOUT/deploy/buzon.example.toml" >"$tmp"
  install -m 0640 "${GROUP[@]}" "$tmp" "$PREFIX$CONF"
  rm -f "$tmp"
fi

# --- the service manager --------------------------------------------------------------
case "$INIT" in
  systemd)
    install -d -m 0755 "$PREFIX/etc/systemd/system"
    for unit in "$CHECKOUT"/deploy/systemd/*.service; do
      install -m 0644 "$unit" "$PREFIX/etc/systemd/system/$(basename "$unit")"
    done
    if ((SPLIT)); then NEXT="systemctl enable --now buzon-smtp buzon-imap buzon-scheduler"
    else NEXT="systemctl enable --now buzon"; fi
    if ((REAL)) && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
      systemctl daemon-reload
    fi
    ;;
  supervisor)
    install -d -m 0755 "$PREFIX/etc/supervisor/conf.d"
    if ((SPLIT)); then src=buzon-split.conf; else src=buzon.conf; fi
    install -m 0644 "$CHECKOUT/deploy/supervisor/$src" "$PREFIX/etc/supervisor/conf.d/buzon.conf"
    NEXT="supervisorctl reread && supervisorctl update"
    ;;
  none) NEXT="run $VENV/bin/buzon run --config $CONF as user buzon" ;;
esac

# --- the schema (as the service user, so that it owns the database and the key) --------
if ((REAL)); then
  say "creating the database schema"
  runuser -u buzon -- "$VENV/bin/buzon" db upgrade --config "$CONF" >/dev/null
fi

say "done. Next: edit $CONF (support_addresses, [smtp] or [[imap.mailboxes]], [outbound]),"
say "  check it: $VENV/bin/buzon doctor --config $CONF"
say "  start it: $NEXT"
