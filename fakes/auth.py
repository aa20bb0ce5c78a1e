"""SMTP authentication on a host (RFC 4954): the ``auth`` key, the exchange, the replies.

A host's ``[auth]`` table (:func:`parse_auth`) becomes a :class:`mailfakes.faults.Auth`;
:class:`AuthSession` is one SMTP session's side of it: it answers AUTH (PLAIN as RFC 4616 says,
LOGIN as real servers do it) and says what a MAIL or a final dot gets from a client that did not
authenticate or may not send as its sender. The replies are Postfix's and RFC 4954's, and
Exchange Online's where a scenario names it. The SMTP fake (``smtp.py``) only calls in here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from .faults import Auth

if TYPE_CHECKING:
    from .spec import HostSpec, WorldSpec

SUBMISSION_PORT: Final = 587  # RFC 6409: submission with STARTTLS
SUBMISSIONS_PORT: Final = 465  # RFC 8314: submission over implicit TLS

# The replies, as Postfix's smtpd sends them unless noted.
SUCCESS: Final = "235 2.7.0 Authentication successful"  # RFC 4954 6
INVALID: Final = "535 5.7.8 Authentication credentials invalid"  # RFC 4954 6
TEMPORARY: Final = "454 4.7.0 Temporary authentication failure"  # RFC 4954 6
NOT_ENABLED: Final = "503 5.5.1 Error: authentication not enabled"  # Postfix, also with smtpd_tls_auth_only
ALREADY: Final = "503 5.5.1 Error: already authenticated"  # RFC 4954 4: a second AUTH gets 503
NO_HELO: Final = "503 5.5.1 Error: send HELO/EHLO first"
IN_TRANSACTION: Final = "503 5.5.1 Error: MAIL transaction in progress"  # RFC 4954 4
SYNTAX: Final = "501 5.5.4 Syntax: AUTH mechanism"
UNKNOWN_MECHANISM: Final = "504 5.5.4 Unrecognized authentication type"  # RFC 4954 4: 504
BAD_BASE64: Final = "501 5.5.2 Invalid base64 data in response"  # RFC 4954 4: 501 and 5.5.2
ABORTED: Final = "501 5.7.0 Authentication aborted"  # RFC 4954 4: '*' gets 501
STARTTLS_FIRST: Final = "530 5.7.0 Must issue a STARTTLS command first"  # Postfix, TLS required
# Exchange Online, to an authenticated client whose sender its account may not use.
SEND_AS_DENIED: Final = "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
USERNAME_CHALLENGE: Final = "334 VXNlcm5hbWU6"  # base64 of "Username:"
PASSWORD_CHALLENGE: Final = "334 UGFzc3dvcmQ6"  # base64 of "Password:"

Push = Callable[[str], Awaitable[None]]
ReadLine = Callable[[], Awaitable[bytes]]


def submission_port(spec: WorldSpec, smart_host: str | None = None) -> int | None:
    """The port a world with authentication listens on inside ``--netns`` (587, or 465 for implicit
    TLS), or None for a world without: the smart host's when named, else any host's."""
    hosts = [h for h in spec.hosts if h.kind == "smtp" and h.smtp.auth is not None]
    if smart_host is not None:
        hosts = [h for h in hosts if h.name == smart_host] or hosts
    if not hosts:
        return None
    return SUBMISSIONS_PORT if hosts[0].smtp.implicit_tls else SUBMISSION_PORT


def account_of(host: HostSpec | None) -> Auth | None:
    return host.smtp.auth if host is not None and host.kind == "smtp" else None


def _b64(line: bytes) -> bytes | None:
    """A client response decoded (RFC 4954 4: ``=`` is an empty one), or None when it is no base64."""
    text = line.strip()
    if text == b"=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class AuthSession:
    """One SMTP session's authentication: the AUTH exchange and what it allows afterwards.

    Example (inside the SMTP fake)::

        s = AuthSession(plan.auth)
        await s.command("PLAIN AGFsZXJ0cwBzM2NyZXQ=", helo=True, tls_active=True,
                        in_transaction=False, push=push, readline=readline)
        s.user    # "alerts" when the credentials were right
    """

    __slots__ = ("auth", "user")

    def __init__(self, auth: Auth) -> None:
        self.auth = auth
        self.user: str | None = None  # the account, once authenticated

    def reset(self) -> None:
        """TLS is up: the session starts over (RFC 3207 4.2), unauthenticated."""
        self.user = None

    async def command(
        self,
        arg: str | None,
        *,
        helo: bool,
        tls_active: bool,
        in_transaction: bool,
        push: Push,
        readline: ReadLine,
    ) -> None:
        """Answer ``AUTH arg``; ``readline`` gives the client's next line (b"" when it is gone)."""
        a = self.auth
        if not helo:
            await push(NO_HELO)
            return
        if not a.offered(tls_active=tls_active):
            await push(NOT_ENABLED)
            return
        if self.user is not None:
            await push(ALREADY)
            return
        if in_transaction:
            await push(IN_TRANSACTION)
            return
        args = (arg or "").split()
        if not args or len(args) > 2:
            await push(SYNTAX)
            return
        mechanism = args[0].upper()
        if mechanism not in a.mechanisms:
            await push(UNKNOWN_MECHANISM)
            return
        initial = args[1].encode() if len(args) == 2 else None
        if mechanism == "PLAIN":
            got = await self._plain(initial, push, readline)
        else:
            got = await self._login(initial, push, readline)
        if got is None:
            return  # answered already, or the client left
        user, password = got
        if a.fault == "temporary":
            await push(TEMPORARY)
        elif a.fault == "bad_credentials" or (user, password) != (a.user, a.password):
            await push(INVALID)
        else:
            self.user = user
            await push(SUCCESS)

    async def _response(self, challenge: str, push: Push, readline: ReadLine) -> bytes | None:
        """Send a 334 challenge and read the client's answer, decoded; None once answered or gone."""
        await push(challenge)
        line = await readline()
        if not line:
            return None
        return await self._decoded(line.rstrip(b"\r\n"), push)

    async def _decoded(self, line: bytes, push: Push) -> bytes | None:
        if line.strip() == b"*":
            await push(ABORTED)
            return None
        decoded = _b64(line)
        if decoded is None:
            await push(BAD_BASE64)
        return decoded

    async def _plain(self, initial: bytes | None, push: Push, readline: ReadLine) -> tuple[str, str] | None:
        # RFC 4616: [authzid] NUL authcid NUL passwd, sent at once or after an empty challenge.
        if initial is not None:
            data = await self._decoded(initial, push)
        else:
            data = await self._response("334 ", push, readline)
        if data is None:
            return None
        parts = data.split(b"\0")
        if len(parts) != 3 or (parts[0] and parts[0] != parts[1]):
            # Malformed, or asking to act as another identity: Cyrus (Postfix) refuses both so.
            await push(INVALID)
            return None
        return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")

    async def _login(self, initial: bytes | None, push: Push, readline: ReadLine) -> tuple[str, str] | None:
        # LOGIN (draft-murchison-sasl-login): the user name, then the password, each after a challenge;
        # some clients send the user name with the command, as Postfix and Exchange accept.
        if initial is not None:
            user = await self._decoded(initial, push)
        else:
            user = await self._response(USERNAME_CHALLENGE, push, readline)
        if user is None:
            return None
        password = await self._response(PASSWORD_CHALLENGE, push, readline)
        if password is None:
            return None
        return user.decode("utf-8", "replace"), password.decode("utf-8", "replace")

    def mail_refusal(self, *, tls_active: bool, tls_possible: bool) -> str | None:
        """The reply to a MAIL of this session, when its host refuses it for want of AUTH, else None."""
        a = self.auth
        if a.required is None or self.user is not None:
            return None
        if not tls_active and tls_possible and not a.before_tls and a.fault != "not_offered":
            return STARTTLS_FIRST
        return a.required.line()

    def data_refusal(self, sender: str) -> str | None:
        """The reply to the final dot of a message from ``sender``, when the account may not send as it."""
        if self.user is not None and not self.auth.may_send_as(sender):
            return SEND_AS_DENIED
        return None
