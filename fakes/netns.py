"""Hermetic mode: run worlds and clients in a private network namespace.

``mailfakes check --netns`` and ``mailfakes serve --netns`` re-run
themselves under ``unshare --net --mount``: inside, only a loopback
interface exists, the fake DNS listens on 127.0.0.1:53, and a private
``resolv.conf`` is bind-mounted over ``/etc/resolv.conf``, so clients that
only know the system resolver (curl, swaks, msmtp, Postfix) resolve through
the fakes. Nothing leaves the namespace, and nothing of it survives the run:
the namespace ends with its last process.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

INSIDE_FLAG = "--inside-netns"
RESOLV_CONF = Path("/etc/resolv.conf")

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


class NetnsError(RuntimeError):
    """The namespace cannot be made here; the message says why and what to do."""


def unshare_command() -> list[str]:
    """The unshare invocation for this user, or NetnsError saying what is missing."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise NetnsError("--netns needs the 'unshare' command (util-linux); install it or drop --netns")
    base = [unshare, "--net", "--mount", "--propagation", "private", "--fork"]
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


def reexec_inside(argv: list[str]) -> int:
    """Run ``python -m fakes ARGV --inside-netns`` in a fresh namespace; return its exit status."""
    # The flag goes before any "--": what follows it is the user's command.
    at = argv.index("--") if "--" in argv else len(argv)
    inner = [*argv[:at], INSIDE_FLAG, *argv[at:]]
    if inner.count(INSIDE_FLAG) != 1:
        raise NetnsError("already inside a mailfakes namespace")
    command = [*unshare_command(), sys.executable, "-m", "fakes", *inner]
    try:
        return subprocess.run(command, stdin=None).returncode
    except KeyboardInterrupt:
        return 130


def loopback_up() -> None:
    """Bring ``lo`` up (it starts down in a new namespace), without needing iproute2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | _IFF_UP))


def in_private_namespace() -> bool:
    """True when this process sees no network interface but lo (our namespace)."""
    return {name for _, name in socket.if_nameindex()} <= {"lo"}


def private_resolver(dns_host: str = "127.0.0.1", *, timeout: int = 1) -> Path:
    """Bind-mount a resolv.conf naming only the fake DNS over /etc/resolv.conf.

    Only inside our own mount namespace: refuses to touch the host's file.
    Returns the temporary directory holding the file (removed by the caller).
    """
    if not in_private_namespace():
        raise NetnsError("refusing to replace /etc/resolv.conf outside a private network namespace")
    directory = Path(tempfile.mkdtemp(prefix="mailfakes-netns-"))
    conf = directory / "resolv.conf"
    conf.write_text(
        "# mailfakes: the world's fake DNS server, and nothing else\n"
        f"nameserver {dns_host}\n"
        f"options timeout:{max(1, timeout)} attempts:1\n"
    )
    conf.chmod(0o644)
    result = subprocess.run(
        ["mount", "--bind", str(conf), str(RESOLV_CONF.resolve())], capture_output=True, text=True, timeout=10
    )
    if result.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise NetnsError(f"cannot bind-mount a private resolv.conf: {result.stderr.strip()}")
    return directory


def enter() -> Path:
    """Everything the inside of the namespace needs before a world starts."""
    loopback_up()
    return private_resolver()
