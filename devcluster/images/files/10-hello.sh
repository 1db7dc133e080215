# A start hook: start.sh sources every *.sh file in /usr/local/bin/start-notebook.d.
export STUDIO_IMAGE_HOOK_RAN=1
