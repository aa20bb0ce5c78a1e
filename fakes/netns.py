"""Hermetic mode: run worlds and clients in a private network namespace.

``mailfakes check --netns`` and ``mailfakes serve --netns`` re-run
themselves under ``unshare --net --mount --pid``: inside, only a loopback
interface exists, the fake DNS listens on 127.0.0.1:53, and a private
``resolv.conf`` (plus an ``nsswitch.conf`` that sends host lookups to files
and DNS only) is bind-mounted over the system's, so clients that only know
the system resolver (curl, swaks, msmtp, Postfix) resolve through the fakes.

Nothing leaves the namespace, and nothing of it outlives the mailfakes that
made it, even after ``kill -9``: the unshare process gets SIGKILL when
mailfakes dies (``PR_SET_PDEATHSIG``), its child, the namespace's PID 1,
when unshare dies (``--kill-child``), and the kernel kills every other
process of a PID namespace whose PID 1 is gone. Temporary files made inside
(the resolver files, the world's CA, the clients' ``TMPDIR``) live on a
tmpfs mounted in the namespace's own mount namespace, so they vanish with it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

INSIDE_FLAG = "--inside-netns"
MARKER_ENV = "MAILFAKES_NETNS"  # set inside, for recipes that must only run there
RESOLV_CONF = Path("/etc/resolv.conf")
NSSWITCH_CONF = Path("/etc/nsswitch.conf")
PRIVATE_TMP = Path("/dev/shm")  # a tmpfs of our own is mounted here, inside only

# The ULA prefix (RFC 4193) whose addresses the harness puts on lo inside its own namespaces, one
# per IPv6 host: fd6d:6169:6c66 spells "mailf". Outside such a namespace they are refused.
IPV6_PREFIX = "fd6d:6169:6c66::/48"
_IPV6_DISABLE = Path("/proc/sys/net/ipv6/conf")
_NETLINK_ROUTE = 0
_RTM_NEWADDR = 20
_NLMSG_ERROR = 2
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
_IFA_ADDRESS, _IFA_LOCAL, _IFA_FLAGS = 1, 2, 8
_IFA_F_NODAD = 0x02
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_PR_SET_PDEATHSIG = 1
_CLONE_NEWNS = 0x00020000
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000
# Devices the kernel puts, down and unconfigured, in every new network
# namespace once their tunnel module is loaded; they carry nothing until set up.
_FALLBACK_TUNNELS = frozenset(
    {"tunl0", "sit0", "ip6tnl0", "gre0", "gretap0", "erspan0", "ip6gre0", "ip_vti0", "ip6_vti0"}
)


@functools.cache
def _libc(name: str) -> Any:
    """A function of the C library (Linux only, where namespaces exist)."""
    # ctypes, shutil and tempfile are imported where used: `serve` without
    # --netns imports this module too, and would pay 3 ms for them.
    import ctypes

    library = ctypes.CDLL(None, use_errno=True)
    function = getattr(library, name, None)
    if function is None:
        raise NetnsError(f"this system's C library has no {name}(): hermetic mode needs Linux")
    return function


_own_mounts = False  # set once this process has a mount namespace of its own


class NetnsError(RuntimeError):
    """The namespace cannot be made here; the message says why and what to do."""


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get SIGKILL when the thread starting it ends.

    That holds even when mailfakes itself is killed with SIGKILL, which no
    handler of ours can see. Call it in the thread that starts the child and
    waits for it (the kernel ties the signal to that thread).
    """
    parent = os.getpid()
    # Looked up here, before the fork: loading a library between fork and
    # exec could deadlock on a lock another thread held.
    prctl = _libc("prctl")

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above: nobody would tell us
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def unshare_command() -> list[str]:
    """The unshare invocation for this user, or NetnsError saying what is missing."""
    import shutil

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
    """Run ``python -m mailfakes ARGV --inside-netns`` in a fresh namespace; return its exit status.

    A set ``stop`` (SIGINT or SIGTERM in this process) is passed on as SIGTERM,
    so the inside stops cleanly; everything in the namespace dies with it,
    and with this process if it is killed outright.
    """
    # The flag goes before the first "--": what follows it is the user's command.
    at = argv.index("--") if "--" in argv else len(argv)
    inner = [*argv[:at], INSIDE_FLAG, *argv[at:]]
    # -P: a scenarios/ folder in the current directory must not shadow the package.
    command = [*unshare_command(), sys.executable, "-P", "-m", "mailfakes", *inner]
    # Same process group as ours: a terminal's Ctrl-C and job control reach
    # the inside (serve --netns -- bash stays interactive).
    proc = subprocess.Popen(command, preexec_fn=die_with_parent())
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


def _interface_is_up(sock: socket.socket, name: str) -> bool:
    request = struct.pack("16sh", name.encode()[:15], 0)
    flags: int = struct.unpack("16sh", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
    return bool(flags & _IFF_UP)


def loopback_up() -> None:
    """Bring ``lo`` up (it starts down in a new namespace), without needing iproute2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | _IFF_UP))


def refusal() -> str | None:
    """Why this process is not inside a namespace like the one ``reexec_inside`` makes (None if it is).

    The facts are ones the environment cannot forge: the process is PID 1 of
    a PID namespace (``unshare --pid --fork`` makes the inside mailfakes
    that; on a host, PID 1 is the system's init), and its network namespace
    holds nothing but ``lo`` (and the kernel's idle fallback tunnels), so no
    packet can leave it. Environment variables and flags count for nothing.
    """
    pid = os.getpid()
    if pid != 1:
        return f"this process is not the first process of a new PID namespace (its PID is {pid})"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        others = sorted(
            name
            for _, name in socket.if_nameindex()
            if name != "lo" and (name not in _FALLBACK_TUNNELS or _interface_is_up(s, name))
        )
    if others:
        return f"its network namespace has interfaces other than lo ({', '.join(others)})"
    return None


def in_private_namespace() -> bool:
    """True only in a PID and network namespace like the ones ``reexec_inside`` makes."""
    return refusal() is None


def _in_prefix(value: str) -> bool:
    import ipaddress

    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return False
    return ip.version == 6 and ip in ipaddress.ip_network(IPV6_PREFIX)


def _only_lo() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return all(
            name == "lo" or (name in _FALLBACK_TUNNELS and not _interface_is_up(s, name))
            for _, name in socket.if_nameindex()
        )


def _nested_pid_namespace() -> bool:
    """Whether this process lives in a PID namespace below the initial one (its NSpid has levels)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    line = next((ln for ln in status.splitlines() if ln.startswith("NSpid:")), "")
    return len(line.split()) > 2


def in_harness_namespace() -> bool:
    """Whether this process is mailfakes's namespace's PID 1 (:func:`in_private_namespace`) or a
    process started inside such a namespace (a client that ``check --netns`` runs, ``send``
    among them): a PID namespace below the initial one, and a network namespace that holds
    nothing but lo, so no packet of it can leave the machine."""
    if in_private_namespace():
        return True
    return _nested_pid_namespace() and _only_lo()


def is_namespace_address(value: str) -> bool:
    """Whether ``value`` is an address of :data:`IPV6_PREFIX` and this process runs inside a
    namespace like the one ``reexec_inside`` makes (:func:`in_harness_namespace`): only there do
    those addresses exist, on lo; anywhere else they could route off the machine."""
    return _in_prefix(value) and in_harness_namespace()


def ipv6_address_for(ipv4: str) -> str:
    """The IPv6 address a host at 127.A.B.N gets inside the namespace: PREFIX:AABB::N (hex)."""
    a, b, n = (int(x) for x in ipv4.split(".")[1:])
    return f"{IPV6_PREFIX.split('::')[0]}:{a:02x}{b:02x}::{n:x}"


def enable_ipv6() -> None:
    """Make sure IPv6 is on for lo in this namespace (its sysctls are the namespace's own)."""
    _check_inside("refusing to change IPv6 settings outside a mailfakes network namespace")
    for device in ("all", "lo"):
        flag = _IPV6_DISABLE / device / "disable_ipv6"
        if flag.exists() and flag.read_text().strip() != "0":
            flag.write_text("0\n")


def add_ipv6_address(address: str) -> None:
    """Put ``address`` (of :data:`IPV6_PREFIX`) on lo, over netlink (no iproute2 needed).

    Refused (NetnsError) before anything is sent unless this process runs inside a namespace
    like the one ``reexec_inside`` makes and the address is of the prefix. An address already
    there is fine: another world of this namespace may have put it there.
    """
    _check_inside(f"refusing to add the address {address} outside a mailfakes network namespace")
    if not _in_prefix(address):
        raise NetnsError(
            f"refusing to add {address!r} to lo: only addresses of {IPV6_PREFIX} are the harness's"
        )
    index = socket.if_nametoindex("lo")
    packed = socket.inet_pton(socket.AF_INET6, address)

    def attribute(kind: int, data: bytes) -> bytes:
        body = struct.pack("HH", 4 + len(data), kind) + data
        return body + b"\0" * (-len(body) % 4)

    payload = struct.pack("BBBBI", socket.AF_INET6, 128, _IFA_F_NODAD, 0, index)
    payload += attribute(_IFA_LOCAL, packed) + attribute(_IFA_ADDRESS, packed)
    payload += attribute(_IFA_FLAGS, struct.pack("I", _IFA_F_NODAD))
    flags = _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_EXCL
    message = struct.pack("IHHII", 16 + len(payload), _RTM_NEWADDR, flags, 1, 0) + payload
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE) as nl:
        nl.settimeout(2.0)
        nl.bind((0, 0))
        nl.send(message)
        reply = nl.recv(65536)
    kind = struct.unpack("H", reply[4:6])[0]
    if kind != _NLMSG_ERROR:
        raise NetnsError(f"cannot add {address} to lo: unexpected netlink reply type {kind}")
    code = -struct.unpack("i", reply[16:20])[0]
    if code not in (0, errno.EEXIST):
        raise NetnsError(f"cannot add {address} to lo: {os.strerror(code)}")


def _check_inside(what: str) -> None:
    why = refusal()
    if why is not None:
        raise NetnsError(f"{what}: {why}")


def _own_mount_namespace() -> None:
    """Give this process a mount namespace of its own, whose mounts propagate nowhere.

    The unshare that started us already made one, but this does not take
    that on trust: whatever namespace we were started in, the mounts that
    follow are seen by this process and its children only.
    """
    global _own_mounts
    if _own_mounts:
        return
    import ctypes

    if _libc("unshare")(_CLONE_NEWNS) != 0:
        raise NetnsError(f"cannot make a private mount namespace: {os.strerror(ctypes.get_errno())}")
    _mount_call(b"none", b"/", None, _MS_REC | _MS_PRIVATE, "make the mounts private")
    _own_mounts = True


def _mount_call(source: bytes, target: bytes, fstype: bytes | None, flags: int, what: str) -> None:
    import ctypes

    mount = _libc("mount")
    mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    if mount(source, target, fstype, flags, None) != 0:
        code = ctypes.get_errno()
        raise NetnsError(f"cannot {what} ({target.decode()}): {os.strerror(code)} [{errno.errorcode[code]}]")


def _bind(source: Path, target: Path) -> None:
    _mount_call(
        str(source).encode(),
        str(target.resolve()).encode(),
        None,
        _MS_BIND,
        f"bind-mount a private {target.name}",
    )


def private_tmp() -> Path:
    """Mount an empty tmpfs of our own on /dev/shm and make it the temporary directory.

    The world's CA, the resolver files and the clients' ``TMPDIR`` go there,
    so they vanish with the namespace, however mailfakes ends. /tmp stays the
    host's: the user's files and report paths under it keep working.
    """
    _check_inside("refusing to mount a private tmpfs outside a mailfakes network namespace")
    _own_mount_namespace()
    if not PRIVATE_TMP.is_dir():
        raise NetnsError(f"cannot make a private temporary directory: {PRIVATE_TMP} is missing")
    _mount_call(
        b"tmpfs", str(PRIVATE_TMP).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, "mount a private tmpfs"
    )
    PRIVATE_TMP.chmod(0o1777)
    os.environ["TMPDIR"] = str(PRIVATE_TMP)
    import tempfile

    tempfile.tempdir = str(PRIVATE_TMP)
    return PRIVATE_TMP


def private_resolver(dns_host: str = "127.0.0.1", *, timeout: int = 1) -> Path:
    """Bind-mount a resolv.conf naming only the fake DNS over /etc/resolv.conf.

    Only inside a namespace like the one ``reexec_inside`` makes (see
    :func:`refusal`): anywhere else it refuses before any mount, so the
    host's files are never touched; and the mounts are made in a mount
    namespace of this process's own. Host lookups are also sent to files and
    DNS only (no systemd-resolved, nscd or mDNS, which could answer from
    outside). Returns the temporary directory holding the files (removed by
    the caller; the mounts go with the namespace).
    """
    _check_inside("refusing to replace /etc/resolv.conf outside a mailfakes network namespace")
    _own_mount_namespace()
    import shutil
    import tempfile

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
    """Everything the inside of the namespace needs before a world starts.

    Refuses (NetnsError) before touching anything unless :func:`refusal`
    finds the namespace ``reexec_inside`` makes.
    """
    _check_inside("--inside-netns is for mailfakes itself, use --netns")
    loopback_up()
    enable_ipv6()
    private_tmp()
    return private_resolver()
