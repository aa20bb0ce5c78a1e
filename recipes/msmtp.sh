#!/bin/sh
# msmtp as a delivery client: TLS on, STARTTLS required, the world's CA trusted.
# Use with:  mailfakes check --netns --reader msmtp -- recipes/msmtp.sh
# --debug prints the dialogue, so the reader sees the server's replies; '--'
# ends the options, so the recipient cannot pass for one.
# TLS 1.2 at least, as RFC 8996 requires: Debian's TLS libraries still accept 1.0/1.1.
# --tls-crl-file: a world with a revoked certificate hands its CA's CRL.
# MAILFAKES_REQUIRE_TLS=0 (a scenario whose target does not require TLS): msmtp has no
# opportunistic TLS (msmtp(1): tls is on or off), so --tls=off, the message in clear.
set --
[ -n "$MAILFAKES_CRL_FILE" ] && set -- --tls-crl-file="$MAILFAKES_CRL_FILE"
# The smart host's account, when the scenario gives the client one: --auth=on (msmtp picks the
# mechanism), the password read from the environment by --passwordeval, not on the command line.
if [ -n "${MAILFAKES_AUTH_USER:-}" ]; then
    set -- "$@" --auth=on --user="$MAILFAKES_AUTH_USER" --passwordeval='printf %s "$MAILFAKES_AUTH_PASSWORD"'
else
    set -- "$@" --auth=off
fi
tls=on
[ "${MAILFAKES_REQUIRE_TLS:-1}" = 0 ] && tls=off
# MAILFAKES_IMPLICIT_TLS=1 (a submissions port, RFC 8314): --tls-starttls=off, TLS from the first byte.
starttls=on
[ "${MAILFAKES_IMPLICIT_TLS:-0}" = 1 ] && starttls=off
exec msmtp --debug "$@" \
  --host="$MAILFAKES_SMART_HOST" --port="$MAILFAKES_PORT" \
  --tls="$tls" --tls-starttls="$starttls" --tls-trust-file="$MAILFAKES_CA_FILE" \
  --tls-priorities="NORMAL:-VERS-TLS1.1:-VERS-TLS1.0" \
  --domain=client.fabrikam.test --timeout="$MAILFAKES_TIMEOUT" \
  --from="$MAILFAKES_MAIL_FROM" -- "$MAILFAKES_RCPT_TO" < "$(dirname "$0")/message.eml"
