#!/bin/sh
# Studio start-up launcher (POSIX sh). Usage: studio_startup.sh <step> [-- CMD ARGS...]
# Finds a Python 3.8+ interpreter and execs studio_startup.py (next to this file) with the same
# arguments. Without Python, "run" still runs the init script and execs the command; the other
# steps are skipped. STUDIO_PYTHON_CANDIDATES (space-separated) overrides the interpreters tried.

here=$(dirname "$0")
candidates=${STUDIO_PYTHON_CANDIDATES-"python3 /opt/conda/bin/python3 /usr/bin/python3 /usr/local/bin/python3"}
state_dir="${HOME:-/tmp}/.local/state/studio"
step="${1:-}"

log() {
    mkdir -p "$state_dir" 2>/dev/null
    printf '[%s] %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$1" >>"$state_dir/$step.log" 2>/dev/null
    printf 'studio %s: %s\n' "$step" "$1"
}

fail() {
    printf "Studio start-up step '%s' failed: %s\n" "$step" "$1" >&2
    printf "Studio start-up step '%s' failed: %s\n" "$step" "$1" >/dev/termination-log 2>/dev/null
    exit 1
}

for candidate in $candidates; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -I -S -c 'import sys; sys.exit(sys.version_info < (3, 8))' >/dev/null 2>&1; then
        exec "$candidate" -I -S "$here/studio_startup.py" "$@"
    fi
done

# No usable Python in the image.
case "$step" in
run)
    shift
    [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || fail "run: no command given after '--'."
    script="${STUDIO_FILES:-/etc/studio}/init.sh"
    if [ -s "$script" ] && grep -q '[^[:space:]]' "$script"; then
        log "no Python 3.8+ in the image: running the init script with sh"
        limit="${STUDIO_INIT_TIMEOUT:-600}"
        init_log="$state_dir/init.log"
        mkdir -p "$state_dir"
        echo "=== init.sh started $(date '+%Y-%m-%d %H:%M:%S')" >"$init_log"
        cd "${HOME:-/}" || fail "run: cannot enter the home directory ${HOME:-/}"
        if command -v timeout >/dev/null 2>&1; then
            timeout -s KILL "$limit" /bin/sh "$script" >>"$init_log" 2>&1 &
        else
            log "no 'timeout' command: the init script runs without a time limit"
            /bin/sh "$script" >>"$init_log" 2>&1 &
        fi
        # A stop (SIGTERM) reaches the script at once, even when this shell is PID 1.
        child=$!
        trap 'kill -TERM "$child" 2>/dev/null; exit 143' TERM INT HUP
        wait "$child"
        code=$?
        trap - TERM INT HUP
        cd - >/dev/null || true
        if [ "$code" -ne 0 ]; then
            if [ "$code" -eq 137 ] || [ "$code" -eq 124 ]; then
                reason="did not finish within $limit seconds and was stopped"
            else
                reason="failed (exit code $code)"
            fi
            fail "Your init script $reason. Its last output:
$(tail -n 20 "$init_log")"
        fi
        log "init script finished"
    fi
    exec "$@"
    ;;
sync-envs | user-env | kernels)
    log "skipped: no Python 3.8+ interpreter in the image (tried: $candidates)"
    exit 0
    ;;
*)
    echo "usage: studio_startup.sh {sync-envs|user-env|kernels|run -- CMD [ARGS...]}" >&2
    exit 2
    ;;
esac
