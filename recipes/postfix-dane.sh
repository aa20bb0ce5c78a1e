#!/bin/sh
# Postfix with DANE (RFC 7672): a private Postfix instance, inside the
# mailfakes network namespace, delivers one message by MX lookup on port
# $MAILFAKES_PORT with smtp_tls_security_level = dane and
# smtp_dns_support_level = dnssec, and prints its mail log up to the message's
# first "status=" line.
#   mailfakes check --netns --reader postfix --profile postfix 'dane-*' -- recipes/postfix-dane.sh
# What Postfix does then (smtp_tls_policy.c, tls_dane.c): it asks for DNSSEC
# (the DO bit) and trusts the AD bit of the world's DNS, which answers as a
# validating resolver. An MX host whose address is secure gets a TLSA lookup
# at _PORT._tcp.HOST: usable records make TLS mandatory and the certificate
# must match them (DANE-EE: the leaf's key, names and dates unchecked;
# DANE-TA: a chain to the matched CA, valid now and naming the MX host); no
# records, or an insecure host, fall back to opportunistic TLS; a failed TLSA
# lookup (SERVFAIL, bogus data) defers the message. The world's CA file is not
# used to authenticate here (DANE replaces it).
# The resolver file names only the world's DNS, with "options trust-ad"
# (glibc 2.31 on strips the AD bit otherwise; Postfix 3.7 also sets
# RES_TRUSTAD itself); it is bind-mounted over /etc/resolv.conf inside the
# namespace only, for the run of this recipe.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
[ "${MAILFAKES_DNS_PORT:-53}" = 53 ] || {
    echo "postfix-dane: the world's DNS listens on port $MAILFAKES_DNS_PORT; a resolver file can name port 53 only" >&2
    exit 2
}
[ -z "${MAILFAKES_SMART_HOST:-}" ] || {
    echo "postfix-dane: scenario ${MAILFAKES_SCENARIO:-?} names a smart host ($MAILFAKES_SMART_HOST): DANE applies to delivery by MX lookup" >&2
    exit 2
}

. "$here/postfix-private.sh"
private_postfix postfix-dane "relayhost =
smtp_tcp_port = $MAILFAKES_PORT
smtp_host_lookup = dns
smtp_dns_support_level = dnssec
smtp_tls_security_level = dane
# No probe of the root zone (outside the world): the TLSA and address lookups show the AD bit.
dnssec_probe ="

# The smtp client starts (and reads the resolver file) only once the message is
# queued, so the file is replaced after the start and before sendmail.
resolv=$work/resolv.conf
timeout=$(printf '%.0f' "${MAILFAKES_TIMEOUT:-2}")
[ "$timeout" -ge 1 ] || timeout=1
cat > "$resolv" <<CONF
# mailfakes: the world's DNS, whose AD bit is trusted (a validating resolver)
nameserver ${MAILFAKES_DNS_HOST:-127.0.0.1}
options trust-ad timeout:$timeout attempts:1
CONF
chmod 644 "$resolv"
mounted=0
postfix_dane_cleanup() {
    # Only our own mount: the namespace's resolver file stays for the next scenario.
    [ "$mounted" = 0 ] || umount /etc/resolv.conf 2>/dev/null || true
    private_postfix_cleanup
}
trap postfix_dane_cleanup EXIT
trap 'exit 130' INT # the EXIT trap then cleans up, once
trap 'exit 143' TERM
mount --bind "$resolv" /etc/resolv.conf
mounted=1

# "dane" adds the TLSA records Postfix will match, one line each
# ("DNSSEC-signed TLSA record: _25._tcp.HOST: 3 1 1 A4AA..."): the log then
# shows that DANE applied, not a CA check. The smtp client, started for the
# message, reads main.cf then.
postconf -e "smtp_tls_loglevel = 1, dane"
sendmail -f "$MAILFAKES_MAIL_FROM" -- "$MAILFAKES_RCPT_TO" < "$here/message.eml"

# The first delivery attempt ends in one "status=" line: wait for it (bounded),
# then print the log up to it.
if first_status; then
    sed '/status=/q' "$log"
    exit 0
fi
echo "postfix-dane: no delivery attempt logged within 30 s" >&2
cat "$log" >&2 2>/dev/null || true
exit 1
