#!/bin/sh
# curl as a delivery client, TLS required, the world's CA trusted.
# Use with:  mailfakes check --netns --reader curl -- recipes/curl.sh
# curl resolves through the system resolver, so --netns is needed for DNS.
# -v puts the server's replies on stderr, where the curl reader finds them;
# --crlf because aiosmtpd wants CRLF line ends; '--' ends the options, so
# no value of the scenario can pass for one.
# TLS 1.2 at least, as RFC 8996 requires: Debian's TLS libraries still accept 1.0/1.1.
# --crlfile: a world with a revoked certificate hands its CA's CRL (curl then checks the leaf).
# MAILFAKES_REQUIRE_TLS=0 (a scenario whose target does not require TLS): --ssl, TLS when offered.
set --
[ -n "$MAILFAKES_CRL_FILE" ] && set -- --crlfile "$MAILFAKES_CRL_FILE"
# The smart host's account, when the scenario gives the client one: curl logs in with the mechanism
# the server offers (PLAIN, else LOGIN). The credentials go through a config file on stdin (-K -),
# not the command line. Inside the config file's double quotes a backslash escapes, so '\' and
# '"' in the account are escaped (curl(1) --config); curl splits user from password at the first ':'.
auth=
if [ -n "${MAILFAKES_AUTH_USER:-}" ]; then
    set -- "$@" -K -
    account=$(printf '%s' "$MAILFAKES_AUTH_USER:$MAILFAKES_AUTH_PASSWORD" | sed 's/\\/\\\\/g; s/"/\\"/g')
    auth="user = \"$account\""
fi
tls=--ssl-reqd
[ "${MAILFAKES_REQUIRE_TLS:-1}" = 0 ] && tls=--ssl
# MAILFAKES_IMPLICIT_TLS=1 (a submissions port, RFC 8314): smtps://, TLS from the first byte.
scheme=smtp
[ "${MAILFAKES_IMPLICIT_TLS:-0}" = 1 ] && scheme=smtps
printf '%s\n' "$auth" | exec curl -sv "$tls" --crlf \
  --cacert "$MAILFAKES_CA_FILE" --tlsv1.2 "$@" \
  --connect-timeout "$MAILFAKES_TIMEOUT" --max-time 30 \
  --mail-from "$MAILFAKES_MAIL_FROM" --mail-rcpt "$MAILFAKES_RCPT_TO" \
  -T "$(dirname "$0")/message.eml" \
  -- "$scheme://$MAILFAKES_SMART_HOST:$MAILFAKES_PORT"
