#!/bin/sh
# Studio start-up launcher (runs inside the studio's image).
#   studio_startup.sh run -- CMD...   run $STUDIO_FILES/init.sh, then exec CMD
#   studio_startup.sh <step>          a start-up step; done by studio_startup.py when present
set -eu
files=${STUDIO_FILES:-/etc/studio}
step=${1:-}
[ $# -gt 0 ] && shift
if [ "$step" = run ]; then
  [ "${1:-}" = "--" ] && shift
  if [ -s "$files/init.sh" ]; then
    echo "studio: running the init script" >&2
    sh "$files/init.sh" || { echo "studio: the init script failed (exit $?)" >&2; exit 1; }
  fi
  exec "$@"
fi
echo "studio: step '$step' has nothing to do" >&2
