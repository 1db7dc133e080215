#!/bin/bash
# The notebook image's entrypoint script (run as `tini -g -- start.sh CMD…`, as in Jupyter's
# docker-stacks): source or run every hook in /usr/local/bin/start-notebook.d, then exec CMD.
set -e
for hook in /usr/local/bin/start-notebook.d/*; do
    case "$hook" in
        *.sh) echo "start.sh: sourcing $hook"; source "$hook" ;;
        *) if [ -x "$hook" ]; then echo "start.sh: running $hook"; "$hook"; fi ;;
    esac
done 2>/dev/null
exec "$@"
