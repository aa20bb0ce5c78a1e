#!/bin/sh
# Postfix as the delivery client: a private Postfix instance, inside the
# mailfakes network namespace, relays one message through
# relayhost = [$MAILFAKES_SMART_HOST]:$MAILFAKES_PORT with TLS required and the
# certificate verified against the world's CA, then prints its log line for
# the message ("dsn=4.4.1, status=deferred (...)").
#   mailfakes check --netns --reader postfix --profile postfix IDS... -- recipes/postfix-relay.sh
# It bind-mounts its own /etc/postfix, /var/spool/postfix and /var/lib/postfix,
# so it runs only inside the namespace (private mounts): the host's Postfix, if
# any, is never touched.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "postfix-relay: needs root inside the namespace" >&2; exit 2; }
# Only inside a namespace mailfakes made: its own mounts, so the host's Postfix is never touched.
if [ "${MAILFAKES_NETNS:-}" != 1 ] || [ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/1/ns/mnt)" ]; then
    echo "postfix-relay: run it under mailfakes check --netns (it mounts over /etc/postfix)" >&2
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
relayhost = [$MAILFAKES_SMART_HOST]:$MAILFAKES_PORT
smtp_tls_security_level = secure
smtp_tls_secure_cert_match = nexthop
smtp_tls_CAfile = $MAILFAKES_CA_FILE
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
sendmail -f "$MAILFAKES_MAIL_FROM" "$MAILFAKES_RCPT_TO" < "$here/message.eml"

# The first delivery attempt ends in one "status=" line: wait for it (bounded).
i=0
while [ $i -lt 150 ]; do
    if line=$(grep -m1 'status=' "$work/maillog" 2>/dev/null); then
        echo "$line"
        exit 0
    fi
    sleep 0.2
    i=$((i + 1))
done
echo "postfix-relay: no delivery attempt logged within 30 s" >&2
cat "$work/maillog" >&2 2>/dev/null || true
exit 1
