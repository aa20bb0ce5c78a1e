#!/bin/sh
# Postfix with MTA-STS (RFC 8461) through postfix-mta-sts-resolver: inside the
# mailfakes network namespace, mta-sts-daemon answers Postfix's TLS policy
# lookups (smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:postfix), and
# a private Postfix instance delivers one message by MX lookup on port
# $MAILFAKES_PORT, then prints the daemon's answer for the recipient's domain
# ("postfix-mta-sts: mta-sts-daemon answered OK secure match=... for DOMAIN",
# or "answered NOTFOUND") and Postfix's mail log up to the message's first
# "status=" line (stdout), and the daemon's own log (stderr).
#   mailfakes check --netns --reader postfix --profile postfix 'mta-sts-*' -- recipes/postfix-mta-sts.sh
# The daemon looks up _mta-sts.DOMAIN (TXT) in the world's DNS (the
# namespace's resolver file) and fetches https://mta-sts.DOMAIN/.well-known/mta-sts.txt
# trusting only the world's CA (SSL_CERT_FILE). An enforce policy becomes
# "secure match=MX1:MX2... servername=hostname": TLS required, the chain
# verified against the world's CA and the MX host named by the policy. Testing
# and none modes, and a policy it cannot get (no TXT, host unreachable, 404,
# malformed), give no policy: Postfix keeps its default, opportunistic TLS
# (smtp_tls_security_level = may).
# The daemon is not part of Postfix: install it once, outside the namespace
# (which has no network), in a virtual environment of its own:
#   python3 -m venv ~/.cache/mailfakes/mta-sts-resolver
#   ~/.cache/mailfakes/mta-sts-resolver/bin/pip install postfix-mta-sts-resolver
# The recipe runs $MAILFAKES_MTA_STS_DAEMON, else mta-sts-daemon from PATH,
# else the one of that environment (under $XDG_CACHE_HOME when it is set).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
[ -z "${MAILFAKES_SMART_HOST:-}" ] || {
    echo "postfix-mta-sts: scenario ${MAILFAKES_SCENARIO:-?} names a smart host ($MAILFAKES_SMART_HOST): MTA-STS applies to delivery by MX lookup" >&2
    exit 2
}
daemon=${MAILFAKES_MTA_STS_DAEMON:-}
if [ -z "$daemon" ]; then
    daemon=$(command -v mta-sts-daemon 2>/dev/null ||
        echo "${XDG_CACHE_HOME:-$HOME/.cache}/mailfakes/mta-sts-resolver/bin/mta-sts-daemon")
fi
[ -x "$daemon" ] || {
    echo "postfix-mta-sts: mta-sts-daemon not found ($daemon); install postfix-mta-sts-resolver (see the head of this recipe)" >&2
    exit 2
}

. "$here/postfix-private.sh"
private_postfix postfix-mta-sts "relayhost =
smtp_tcp_port = $MAILFAKES_PORT
smtp_tls_security_level = may
smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:postfix"

# The daemon's bound on the TXT lookup and the policy fetch, together: generous, since
# a busy machine can take seconds over the first HTTPS fetch, and a fetch that
# times out silently gives no policy (the message then goes out as if none were
# published). An unreachable policy host refuses at once; no scenario drops it.
timeout=10
cat > "$work/mta-sts-daemon.yml" <<CONF
host: 127.0.0.1
port: 8461
shutdown_timeout: 1
cache:
  type: internal
default_zone:
  strict_testing: false
  timeout: $timeout
CONF
daemon_log=$work/mta-sts-daemon.log
daemon_pid=''
postfix_mta_sts_cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill -KILL "$daemon_pid" 2>/dev/null || true # it keeps nothing (an in-memory cache)
        wait "$daemon_pid" 2>/dev/null || true
    fi
    cat "$daemon_log" >&2 2>/dev/null || true
    private_postfix_cleanup
}
trap postfix_mta_sts_cleanup EXIT
trap 'exit 130' INT # the EXIT trap then cleans up, once
trap 'exit 143' TERM
SSL_CERT_FILE=$MAILFAKES_CA_FILE SSL_CERT_DIR=/nonexistent \
    "$daemon" -c "$work/mta-sts-daemon.yml" -v debug -l "$daemon_log" --disable-uvloop </dev/null &
daemon_pid=$!

# It is listening once it logs "Server started." (bounded wait).
i=0
until grep -q 'Server started' "$daemon_log" 2>/dev/null; do
    kill -0 "$daemon_pid" 2>/dev/null || { echo "postfix-mta-sts: mta-sts-daemon exited at start" >&2; exit 2; }
    [ $i -lt 100 ] || { echo "postfix-mta-sts: mta-sts-daemon did not start within 20 s" >&2; exit 2; }
    sleep 0.2
    i=$((i + 1))
done

sendmail -f "$MAILFAKES_MAIL_FROM" -- "$MAILFAKES_RCPT_TO" < "$here/message.eml"

# The first delivery attempt ends in one "status=" line: wait for it (bounded),
# then print the log up to it.
if first_status; then
    # What the daemon told Postfix for the domain (its first answer; the
    # parent domain's, ".test", comes next), from its debug log:
    # "OK secure match=mx1.contoso.test servername=hostname", or NOTFOUND.
    answer=$(sed -n "s/.* STS: Wrote: b'[0-9]*:\(.*\),'\$/\1/p" "$daemon_log" | head -n 1)
    answer=${answer% }
    echo "postfix-mta-sts: mta-sts-daemon answered ${answer:-nothing} for ${MAILFAKES_RCPT_TO##*@}"
    sed '/status=/q' "$log"
    exit 0
fi
echo "postfix-mta-sts: no delivery attempt logged within 30 s" >&2
cat "$log" >&2 2>/dev/null || true
exit 1
