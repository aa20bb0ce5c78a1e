#!/bin/sh
# Postfix's whole queue cycle in seconds: a private Postfix instance, inside the
# mailfakes network namespace, queues one message, retries it on a short
# backoff, gives up after a short lifetime (or bounces it at once on a 5xx, or
# delivers it), and sends its own non-delivery report back to the sender's
# domain by MX lookup, into the world. It waits (bounded) until the message's
# final status is logged and then until the report's own delivery is, and
# prints the mail log.
#   mailfakes check --netns --reader postfix --profile postfix SCENARIO.toml -- recipes/postfix-queue.sh
# The world must hold the sender's domain (fabrikam.test for the default
# sender@fabrikam.test): an MX record naming a host of the world that accepts
# mail, or the report has nowhere to go. Route of the message: as in
# recipes/postfix.sh (relay through the smart host when the scenario names
# one, else by MX lookup); the report always goes by MX lookup of the sender's
# domain, with the same smtp transport, on port $MAILFAKES_PORT, its
# certificate verified against the MX host name.
# Queue settings, in whole seconds (Postfix's defaults are days and minutes):
#   MAILFAKES_QUEUE_LIFETIME   maximal_queue_lifetime and bounce_queue_lifetime (default 8)
#   MAILFAKES_BACKOFF_MIN      minimal_backoff_time (default 2)
#   MAILFAKES_BACKOFF_MAX      maximal_backoff_time (default 4)
#   MAILFAKES_QUEUE_RUN_DELAY  queue_run_delay, how often the deferred queue is scanned (default 2)
#   MAILFAKES_QUEUE_WAIT       how long to wait for the message and its report in all
#                              (default: twice the lifetime and the longest backoff, plus 30)
# delay_warning_time is off: no "delayed" notice goes to the sender meanwhile.
# Exit status: 0 when the final status (and the report's delivery, if one was
# due) was logged, 1 when the wait ran out or the report could not be delivered.
set -eu
here=$(cd "$(dirname "$0")" && pwd)

seconds() { # name value: a whole number of seconds, at least 1
    case "$2" in
    '' | *[!0-9]*) echo "postfix-queue: $1 must be a whole number of seconds, not '$2'" >&2; exit 2 ;;
    esac
    [ "$2" -ge 1 ] || { echo "postfix-queue: $1 must be at least 1 second" >&2; exit 2; }
}
lifetime=${MAILFAKES_QUEUE_LIFETIME:-8}
backoff_min=${MAILFAKES_BACKOFF_MIN:-2}
backoff_max=${MAILFAKES_BACKOFF_MAX:-4}
run_delay=${MAILFAKES_QUEUE_RUN_DELAY:-2}
seconds MAILFAKES_QUEUE_LIFETIME "$lifetime"
seconds MAILFAKES_BACKOFF_MIN "$backoff_min"
seconds MAILFAKES_BACKOFF_MAX "$backoff_max"
seconds MAILFAKES_QUEUE_RUN_DELAY "$run_delay"
[ "$backoff_max" -ge "$backoff_min" ] || {
    echo "postfix-queue: MAILFAKES_BACKOFF_MAX ($backoff_max) is below MAILFAKES_BACKOFF_MIN ($backoff_min)" >&2
    exit 2
}
wait_for=${MAILFAKES_QUEUE_WAIT:-$((2 * lifetime + 2 * backoff_max + 30))}
seconds MAILFAKES_QUEUE_WAIT "$wait_for"

sender=$MAILFAKES_MAIL_FROM
rcpt=$MAILFAKES_RCPT_TO
sender_domain=${sender##*@}
# Where the report goes: by MX lookup of the sender's domain ("smtp:" with no
# nexthop), certificate matched against the MX host name, whatever the route.
report_route="transport_maps = inline:{$sender_domain=smtp:}
smtp_tls_policy_maps = inline:{ { $sender_domain = verify match=hostname } }"
if [ -n "${MAILFAKES_SMART_HOST:-}" ]; then
    routing="relayhost = [$MAILFAKES_SMART_HOST]:$MAILFAKES_PORT
smtp_tls_security_level = secure
smtp_tls_secure_cert_match = nexthop
$report_route"
else
    routing="relayhost =
smtp_tls_security_level = verify
smtp_tls_verify_cert_match = hostname"
fi

. "$here/postfix-private.sh"
private_postfix postfix-queue "$routing
smtp_tcp_port = $MAILFAKES_PORT
# The queue's cycle in seconds instead of days.
maximal_queue_lifetime = ${lifetime}s
bounce_queue_lifetime = ${lifetime}s
minimal_backoff_time = ${backoff_min}s
maximal_backoff_time = ${backoff_max}s
queue_run_delay = ${run_delay}s
delay_warning_time = 0h"
sendmail -f "$sender" -- "$rcpt" < "$here/message.eml"

# A queue id: hex digits (or the long form's letters and digits).
qid() { sed -n "$1" "$log" 2>/dev/null | head -n 1; }
# The line that ends queue file $1's life: each recipient's sent or bounced,
# or the whole message's expiry ("status=expired, returned to sender").
final_of() {
    grep -E ": $1: (to=<[^>]*>,.* status=(sent|bounced) |from=<[^>]*>, status=expired)" "$log" 2>/dev/null |
        head -n 1
}
show() { cat "$log" 2>/dev/null || true; }

deadline=$(($(date +%s) + wait_for))
message='' final='' report='' report_final=''
while [ "$(date +%s)" -lt "$deadline" ]; do
    [ -n "$message" ] || message=$(qid 's/.*postfix\/pickup\[[0-9]*\]: \([0-9A-Za-z]*\): uid=.*/\1/p')
    if [ -n "$message" ] && [ -z "$final" ]; then
        final=$(final_of "$message")
        case "$final" in *status=sent*)
            show
            exit 0 ;;
        esac
    fi
    if [ -n "$final" ]; then
        # The report Postfix made of it: "QID: sender non-delivery notification: NEWID".
        [ -n "$report" ] ||
            report=$(qid "s/.*: $message: sender non-delivery notification: \([0-9A-Za-z]*\)\$/\1/p")
        if [ -n "$report" ]; then
            report_final=$(final_of "$report")
            case "$report_final" in
            *status=sent*)
                show
                exit 0 ;;
            ?*)
                show
                echo "postfix-queue: the non-delivery report $report to <$sender> was not delivered: $report_final" >&2
                exit 1 ;;
            esac
        fi
    fi
    sleep 0.2
done
show
if [ -z "$final" ]; then
    echo "postfix-queue: no final status for the message within $wait_for s (lifetime ${lifetime} s)" >&2
else
    echo "postfix-queue: the non-delivery report to <$sender> was not delivered within $wait_for s" >&2
fi
exit 1
