#!/bin/sh
# Postfix as the delivery client: a private Postfix instance, inside the
# mailfakes network namespace, delivers one message with TLS required and the
# certificate verified against the world's CA, then prints its mail log up to
# the message's first "status=" line ("dsn=4.4.1, status=deferred (...)").
#   mailfakes check --netns --reader postfix --profile postfix -- recipes/postfix.sh [relay|mx]
# Route (first argument; by default relay when the scenario names a smart host,
# else mx):
#   relay  relayhost = [$MAILFAKES_SMART_HOST]:$MAILFAKES_PORT, certificate
#          matched against the smart host (smtp_tls_security_level = secure)
#   mx     relayhost empty: Postfix looks up the MX hosts of the recipient's
#          domain itself and tries them in order of preference, on port
#          $MAILFAKES_PORT (smtp_tcp_port); the certificate is matched against
#          the MX host name (smtp_tls_security_level = verify)
# It bind-mounts its own /etc/postfix, /var/spool/postfix and /var/lib/postfix,
# so it runs only inside the namespace (private mounts): the host's Postfix, if
# any, is never touched.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
route=${1:-auto}
if [ "$route" = auto ]; then
    if [ -n "${MAILFAKES_SMART_HOST:-}" ]; then route=relay; else route=mx; fi
fi
case "$route" in
relay)
    [ -n "${MAILFAKES_SMART_HOST:-}" ] || {
        echo "postfix: scenario ${MAILFAKES_SCENARIO:-?} names no smart host (the client must look up MX records): use the mx route" >&2
        exit 2
    }
    # MAILFAKES_REQUIRE_TLS=0 (the target does not require TLS): "may", TLS when offered.
    level=secure
    [ "${MAILFAKES_REQUIRE_TLS:-1}" = 0 ] && level=may
    # MAILFAKES_IMPLICIT_TLS=1 (a submissions port, RFC 8314): smtp_tls_wrappermode, TLS on connect
    # (Postfix's TLS_README: wrapper mode wants security level encrypt or above).
    wrapper=no
    [ "${MAILFAKES_IMPLICIT_TLS:-0}" = 1 ] && wrapper=yes
    routing="relayhost = [$MAILFAKES_SMART_HOST]:$MAILFAKES_PORT
smtp_tls_wrappermode = $wrapper
smtp_tls_security_level = $level
smtp_tls_secure_cert_match = nexthop" ;;
mx)
    [ -z "${MAILFAKES_SMART_HOST:-}" ] || {
        echo "postfix: scenario ${MAILFAKES_SCENARIO:-?} names a smart host ($MAILFAKES_SMART_HOST): use the relay route" >&2
        exit 2
    }
    routing="relayhost =
smtp_tcp_port = $MAILFAKES_PORT
smtp_tls_security_level = verify
smtp_tls_verify_cert_match = hostname" ;;
*)
    echo "postfix: unknown route '$route'; expected relay, mx or nothing (chosen by the scenario)" >&2
    exit 2 ;;
esac
. "$here/postfix-private.sh"
private_postfix postfix "$routing"
sendmail -f "$MAILFAKES_MAIL_FROM" -- "$MAILFAKES_RCPT_TO" < "$here/message.eml"

# The first delivery attempt ends in one "status=" line: wait for it (bounded),
# then print the log up to it. The postfix reader reads the status text, and the
# smtp client's certificate verification lines for the certificate's fault.
if first_status; then
    sed '/status=/q' "$log"
    exit 0
fi
echo "postfix: no delivery attempt logged within 30 s" >&2
cat "$log" >&2 2>/dev/null || true
exit 1
