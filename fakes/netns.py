"""Hermetic mode: run worlds and clients in a private network namespace.

``mailfakes check --netns`` and ``mailfakes serve --netns`` re-run
themselves under ``unshare --net --mount --pid``: inside, only a loopback
interface exists, the fake DNS listens on 127.0.0.1:53, and a private
``resolv.conf`` (plus an ``nsswitch.conf`` that sends host lookups to files
and DNS only) is bind-mounted over the system's, so clients that only know
the system resolver (curl, swaks, msmtp, Postfix) resolve through the fakes.
Nothing leaves the namespace, and nothing of it survives the run: its
processes die with it (``--kill-child``) and its mounts with its mount
namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

INSIDE_FLAG = "--inside-netns"
OUTER_ENV = "MAILFAKES_OUTER_NAMESPACES"  # the namespaces of the process that made ours
MARKER_ENV = "MAILFAKES_NETNS"  # set inside, for recipes that must only run there
RESOLV_CONF = Path("/etc/resolv.conf")
NSSWITCH_CONF = Path("/etc/nsswitch.conf")

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


class NetnsError(RuntimeError):
    """The namespace cannot be made here; the message says why and what to do."""


def namespaces() -> str:
    """This process's network and mount namespaces, e.g. 'net:[4026...] mnt:[4026...]'."""
    return " ".join(os.readlink(f"/proc/self/ns/{kind}") for kind in ("net", "mnt"))


def unshare_command() -> list[str]:
    """The unshare invocation for this user, or NetnsError saying what is missing."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise NetnsError("--netns needs the 'unshare' command (util-linux); install it or drop --netns")
    base = [unshare, "--net", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child"]
    if os.geteuid() == 0:
        return base
    probe = subprocess.run(
        [unshare, "--user", "--map-root-user", "--net", "--mount", "true"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if probe.returncode != 0:
        raise NetnsError(
            "--netns needs root or unprivileged user namespaces, and neither is available here "
            f"({probe.stderr.strip() or 'unshare failed'}); run as root, or enable them with "
            "'sysctl kernel.unprivileged_userns_clone=1' (or user.max_user_namespaces > 0)"
        )
    return [unshare, "--user", "--map-root-user", *base[1:]]


def reexec_inside(argv: list[str], stop: threading.Event | None = None) -> int:
    """Run ``python -m fakes ARGV --inside-netns`` in a fresh namespace; return its exit status.

    A set ``stop`` (SIGINT or SIGTERM in this process) is passed on as SIGTERM,
    so the inside stops cleanly; everything in the namespace dies with it.
    """
    # The flag goes before the first "--": what follows it is the user's command.
    at = argv.index("--") if "--" in argv else len(argv)
    inner = [*argv[:at], INSIDE_FLAG, *argv[at:]]
    # -P: a scenarios/ folder in the current directory must not shadow the package.
    command = [*unshare_command(), sys.executable, "-P", "-m", "fakes", *inner]
    env = dict(os.environ, **{OUTER_ENV: namespaces()})
    # Same process group as ours: a terminal's Ctrl-C and job control reach
    # the inside (serve --netns -- bash stays interactive).
    proc = subprocess.Popen(command, env=env)
    stop = stop or threading.Event()
    signalled = False
    while True:
        try:
            return proc.wait(0.2)
        except subprocess.TimeoutExpired:
            pass
        if stop.is_set() and not signalled:
            # unshare itself ignores SIGTERM: tell the mailfakes inside it.
            signalled = True
            for child in _children(proc.pid):
                _kill(child, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                _kill(proc.pid, signal.SIGKILL)  # --kill-child takes the inside with it


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def loopback_up() -> None:
    """Bring ``lo`` up (it starts down in a new namespace), without needing iproute2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | _IFF_UP))


def in_private_namespace() -> bool:
    """True only in a network AND mount namespace other than the ones that started us."""
    outer = os.environ.get(OUTER_ENV, "")
    if not outer:
        return False
    mine = namespaces().split()
    theirs = outer.split()
    return len(theirs) == 2 and all(m != t for m, t in zip(mine, theirs, strict=True))


def _bind(source: Path, target: Path) -> None:
    result = subprocess.run(
        ["mount", "--bind", str(source), str(target.resolve())], capture_output=True, text=True, timeout=10
    )
    if result.returncode != 0:
        raise NetnsError(f"cannot bind-mount a private {target.name}: {result.stderr.strip()}")


def private_resolver(dns_host: str = "127.0.0.1", *, timeout: int = 1) -> Path:
    """Bind-mount a resolv.conf naming only the fake DNS over /etc/resolv.conf.

    Only inside the namespace that ``reexec_inside`` made: anywhere else it
    refuses, so the host's files are never touched. Host lookups are also
    sent to files and DNS only (no systemd-resolved, nscd or mDNS, which
    could answer from outside). Returns the temporary directory holding the
    files (removed by the caller; the mounts go with the namespace).
    """
    if not in_private_namespace():
        raise NetnsError("refusing to replace /etc/resolv.conf outside a mailfakes network namespace")
    directory = Path(tempfile.mkdtemp(prefix="mailfakes-netns-"))
    try:
        conf = directory / "resolv.conf"
        conf.write_text(
            "# mailfakes: the world's fake DNS server, and nothing else\n"
            f"nameserver {dns_host}\n"
            f"options timeout:{max(1, timeout)} attempts:1\n"
        )
        conf.chmod(0o644)
        _bind(conf, RESOLV_CONF)
        if NSSWITCH_CONF.exists():
            nss = directory / "nsswitch.conf"
            kept = [
                ln for ln in NSSWITCH_CONF.read_text().splitlines() if ln.split(":")[0].strip() != "hosts"
            ]
            nss.write_text("\n".join([*kept, "hosts: files dns"]) + "\n")
            nss.chmod(0o644)
            _bind(nss, NSSWITCH_CONF)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    os.environ[MARKER_ENV] = "1"
    return directory


def enter() -> Path:
    """Everything the inside of the namespace needs before a world starts."""
    if not in_private_namespace():
        raise NetnsError("--inside-netns is for mailfakes itself; use --netns")
    loopback_up()
    return private_resolver()
