"""Container start helper: build a private mount namespace from a JSON spec, then exec.

Run as ``python -I container_exec.py SPEC.json [SYNC_FD]`` (standard library only, so that it
starts fast and never imports the package). Steps, all inside a new mount (and UTS) namespace:

1. make every mount private, so nothing leaks back to the host;
2. a fresh ``/dev`` (tmpfs with the usual device nodes, a new devpts and ``/dev/shm``);
3. create top-level placeholder directories on the host for image/volume paths that have no
   existing parent (the only change made to the host's filesystem);
4. overlay mounts: the image's directories (and the host's) as read-only lower layers with a
   per-container writable upper layer, which also gives writable room for mount points;
5. bind mounts for volumes, in order, re-mounted read-only where asked;
6. hostname, supplementary groups, gid, uid, working directory, then ``execvpe``; the
   process is SIGKILLed if the kubelet dies (``PR_SET_PDEATHSIG``), so no orphans are left.

On failure before exec, a one-line reason goes to ``error_file`` and the exit code is 128.
"""

import ctypes
import json
import os
import signal
import sys
import warnings  # noqa: F401  (os.execvpe imports it lazily; maybe unreadable after setuid)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)

DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
           "urandom": (1, 9), "tty": (5, 0)}


class StartError(Exception):
    """A container could not be set up; the message becomes the terminated state's message."""


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise StartError(f"{what}: {os.strerror(err)}")


def mount(source, target, fstype, flags, data=None):
    """mount(2) through libc."""
    _check(_libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
           f"mount {source or fstype} on {target}")


def _b(value):
    return value.encode() if isinstance(value, str) else value


def ensure_mountpoint(target, is_file):
    """Create a directory or an empty file at `target` (parents included) if missing."""
    if os.path.lexists(target):
        return
    os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
    if is_file:
        with open(target, "a"):
            pass
    else:
        os.mkdir(target)


def setup_dev():
    """Mount a private /dev with the standard device nodes."""
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for name, (major, minor) in DEVICES.items():
        path = "/dev/" + name
        os.mknod(path, 0o666 | 0o020000, os.makedev(major, minor))
        os.chmod(path, 0o666)
    os.mkdir("/dev/pts")
    mount("devpts", "/dev/pts", "devpts", MS_NOSUID, "newinstance,ptmxmode=0666,mode=620")
    os.symlink("pts/ptmx", "/dev/ptmx")
    os.mkdir("/dev/shm")
    mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k")
    os.mkdir("/dev/mqueue")
    for index, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{index}", "/dev/" + name)
    os.symlink("/proc/self/fd", "/dev/fd")
    os.symlink("/proc/kcore", "/dev/core")


def setup(spec):
    """Apply the filesystem part of the spec in the current (new) mount namespace."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    if spec.get("dev", True):
        setup_dev()
    for path in spec.get("host_mkdirs", []):
        os.makedirs(path, exist_ok=True)
    for overlay in spec.get("overlays", []):
        os.makedirs(overlay["upper"], exist_ok=True)
        os.makedirs(overlay["work"], exist_ok=True)
        lower = ":".join(p.replace(":", "\\:") for p in overlay["lower"])
        data = f"lowerdir={lower},upperdir={overlay['upper']},workdir={overlay['work']}"
        try:
            mount("overlay", overlay["target"], "overlay", 0, data)
        except StartError as exc:
            if not overlay.get("optional"):
                raise
            print(f"devcluster: {exc} (continuing without overlay)", file=sys.stderr)
    for bind in spec.get("binds", []):
        source, target = bind["source"], bind["target"]
        try:
            ensure_mountpoint(target, os.path.isfile(source))
        except OSError as exc:
            raise StartError(f"cannot create mount point {target}: {exc.strerror}") from exc
        mount(source, target, None, MS_BIND | MS_REC)
        if bind.get("readonly"):
            mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def drop_privileges(spec):
    """Set supplementary groups, gid and uid as the spec says."""
    uid, gid = spec.get("uid"), spec.get("gid")
    groups = spec.get("groups") or []
    if uid is None and gid is None and not groups:
        return
    if gid is None:
        gid = 0
    os.setgroups(sorted({gid, *groups}))
    os.setgid(gid)
    if uid is not None:
        os.setuid(uid)


def run(spec):
    """Set up the namespace and exec the container's command (never returns on success)."""
    flags = CLONE_NEWNS | (CLONE_NEWUTS if spec.get("hostname") else 0)
    _check(_libc.unshare(flags), "unshare")
    setup(spec)
    if spec.get("hostname"):
        name = spec["hostname"].encode()
        _check(_libc.sethostname(name, len(name)), "sethostname")
    drop_privileges(spec)
    if spec.get("die_with_parent", True):  # after setuid, which clears it
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
        if os.getppid() != spec.get("parent_pid", os.getppid()):
            raise StartError("the kubelet went away")
    cwd = spec.get("cwd") or "/"
    try:
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)
    except OSError as exc:
        raise StartError(f"chdir to cwd ({cwd!r}) set in config.json failed: {exc.strerror}")\
            from exc
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as exc:
        if exc.errno == 2:
            what = "no such file or directory" if "/" in argv[0] else \
                "executable file not found in $PATH"
        else:
            what = exc.strerror
        raise StartError(f'exec: "{argv[0]}": {what}') from exc


def main(argv):
    """Entry point: `container_exec.py SPEC.json [SYNC_FD]`."""
    if len(argv) > 2:  # the start-sync pipe: closed by exec, so the kubelet knows we started
        os.set_inheritable(int(argv[2]), False)
    with open(argv[1]) as f:
        spec = json.load(f)
    error_file = open(spec["error_file"], "w") if spec.get("error_file") else None  # noqa: SIM115
    try:
        if not spec.get("argv"):
            raise StartError("no command specified")
        run(spec)
    except (StartError, OSError) as exc:
        message = ("failed to create containerd task: OCI runtime create failed: "
                   f"unable to start container process: {exc}")
        if error_file:
            error_file.write(message)
            error_file.close()
        print(message, file=sys.stderr)
        return 128
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
