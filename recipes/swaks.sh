#!/bin/sh
# swaks as a delivery client, TLS required (--tls) and verified (--tls-verify).
# Use with:  mailfakes check --netns --reader swaks -- recipes/swaks.sh
# swaks 20201014 does not check the certificate's host name: it cannot see
# tls-cert-wrong-host.
# TLS 1.2 at least, as RFC 8996 requires: Debian's TLS libraries still accept 1.0/1.1.
# The smart host's account, when the scenario gives the client one: --auth (swaks picks among
# the mechanisms offered), the password from the environment.
# MAILFAKES_REQUIRE_TLS=0 (a scenario whose target does not require TLS): --tls-optional.
set --
if [ -n "${MAILFAKES_AUTH_USER:-}" ]; then
    set -- --auth --auth-user "$MAILFAKES_AUTH_USER" --auth-password "$MAILFAKES_AUTH_PASSWORD" --auth-hide-password "<hidden>"
fi
tls=--tls
[ "${MAILFAKES_REQUIRE_TLS:-1}" = 0 ] && tls=--tls-optional
# MAILFAKES_IMPLICIT_TLS=1 (a submissions port, RFC 8314): --tlsc, TLS on connect.
[ "${MAILFAKES_IMPLICIT_TLS:-0}" = 1 ] && tls=--tlsc
exec swaks "$@" --server "$MAILFAKES_SMART_HOST:$MAILFAKES_PORT" \
  "$tls" --tls-verify --tls-ca-path "$MAILFAKES_CA_FILE" --tls-protocol tlsv1_2,tlsv1_3 \
  --from "$MAILFAKES_MAIL_FROM" --to "$MAILFAKES_RCPT_TO" \
  --helo client.fabrikam.test --timeout "$MAILFAKES_TIMEOUT"
