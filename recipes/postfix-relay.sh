#!/bin/sh
# Postfix relaying through the scenario's smart host:
# relayhost = [$MAILFAKES_SMART_HOST]:$MAILFAKES_PORT, TLS required, the
# certificate verified against the world's CA and matched against the smart host.
#   mailfakes check --netns --reader postfix --profile postfix IDS... -- recipes/postfix-relay.sh
# See recipes/postfix.sh, which does the work (and picks the route by itself).
exec "$(dirname "$0")/postfix.sh" relay
