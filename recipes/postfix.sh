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
    routing="relayhost = [$MAILFAKES_SMART_HOST]:$MAILFAKES_PORT
smtp_tls_security_level = secure
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
[ "$(id -u)" = 0 ] || { echo "postfix: needs root inside the namespace" >&2; exit 2; }
# Only inside a namespace mailfakes made: its own mounts, so the host's Postfix is never touched.
if [ "${MAILFAKES_NETNS:-}" != 1 ] || [ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/1/ns/mnt)" ]; then
    echo "postfix: run it under mailfakes check --netns (it mounts over /etc/postfix)" >&2
    exit 2
fi

work=$(mktemp -d /tmp/mailfakes-postfix-XXXXXX)
cleanup() {
    postfix abort >/dev/null 2>&1 || true
    for d in /var/lib/postfix /var/spool/postfix /etc/postfix; do umount -l "$d" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

mkdir -p "$work/etc" "$work/spool" "$work/lib"
cp -a /etc/postfix/. "$work/etc/"
timeout=$(printf '%.0f' "${MAILFAKES_TIMEOUT:-2}")
[ "$timeout" -ge 1 ] || timeout=1
cat > "$work/etc/main.cf" <<CONF
compatibility_level = 3.6
myhostname = relay.fabrikam.test
mydomain = fabrikam.test
myorigin = fabrikam.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
master_service_disable = inet
$routing
smtp_tls_CAfile = $MAILFAKES_CA_FILE
# TLS 1.2 at least where TLS is required (RFC 8996); Postfix 3.7 still allows 1.0/1.1.
smtp_tls_mandatory_protocols = >=TLSv1.2
smtp_tls_loglevel = 1
smtp_connect_timeout = ${timeout}s
smtp_helo_timeout = 10s
smtp_data_done_timeout = 10s
maillog_file = $work/maillog
maillog_file_prefixes = /tmp
alias_maps =
alias_database =
CONF
cat > "$work/etc/master.cf" <<'CONF'
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CONF
mount --bind "$work/etc" /etc/postfix
mount --bind "$work/spool" /var/spool/postfix
mount --bind "$work/lib" /var/lib/postfix
chown postfix /var/lib/postfix
postfix set-permissions >/dev/null 2>&1 || true
postfix start >/dev/null 2>&1 || { postfix check; exit 2; }
sendmail -f "$MAILFAKES_MAIL_FROM" -- "$MAILFAKES_RCPT_TO" < "$here/message.eml"

# The first delivery attempt ends in one "status=" line: wait for it (bounded),
# then print the log up to it. The postfix reader reads the status text, and the
# smtp client's certificate verification lines for the certificate's fault.
i=0
while [ $i -lt 150 ]; do
    if grep -q 'status=' "$work/maillog" 2>/dev/null; then
        sed '/status=/q' "$work/maillog"
        exit 0
    fi
    sleep 0.2
    i=$((i + 1))
done
echo "postfix: no delivery attempt logged within 30 s" >&2
cat "$work/maillog" >&2 2>/dev/null || true
exit 1
