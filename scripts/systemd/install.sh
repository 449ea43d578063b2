#!/usr/bin/env bash
# Install the systemd user units with this checkout's paths filled in.
#   scripts/systemd/install.sh [--base-dir DIR]      (default base dir: the repo root)
# Then either   systemctl --user enable --now trainer-watchdog        (the watchdog supervises)
#        or     systemctl --user enable --now trainer.target          (systemd supervises each daemon)
# Never both. To keep them running after logout: loginctl enable-linger "$USER".
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BASE_DIR=${TRAINER_BASE_DIR:-$REPO}
while [ $# -gt 0 ]; do
  case "$1" in
    --base-dir) BASE_DIR=$(cd "$2" && pwd); shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
DEST=${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user
mkdir -p "$DEST"
for f in "$REPO"/scripts/systemd/*.service "$REPO"/scripts/systemd/*.target; do
  sed -e "s|@REPO@|$REPO|g" -e "s|@BASE_DIR@|$BASE_DIR|g" "$f" > "$DEST/$(basename "$f")"
  echo "installed $DEST/$(basename "$f")"
done
systemctl --user daemon-reload 2>/dev/null || echo "(systemctl --user is not available here: run 'systemctl --user daemon-reload' in your session)"
