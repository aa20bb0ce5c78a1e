#!/bin/sh
# Postfix delivering by MX lookup, as an MTA on the internet does: relayhost is
# empty, the message goes to the recipient's domain, and Postfix looks up its MX
# hosts itself and tries them in order of preference, TLS required and the
# certificate matched against the MX host name. For the scenarios without a
# smart host (baseline-mx-fallback, dns-mx-no-address, tcp-refused-decommissioned).
#   mailfakes check --netns --reader postfix --profile postfix IDS... -- recipes/postfix-mx.sh
# See recipes/postfix.sh, which does the work.
exec "$(dirname "$0")/postfix.sh" mx
