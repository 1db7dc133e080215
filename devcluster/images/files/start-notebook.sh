#!/bin/bash
# The notebook image's default command: the single-user server under JupyterHub, JupyterLab
# otherwise (extra arguments are passed on).
if [ -n "${JUPYTERHUB_API_TOKEN:-}" ]; then
    exec jupyterhub-singleuser "$@"
fi
exec jupyter lab --ip=0.0.0.0 "$@"
