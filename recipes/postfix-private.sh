# A private Postfix instance inside the mailfakes network namespace, shared by
# recipes/postfix.sh, postfix-queue.sh, postfix-dane.sh and postfix-mta-sts.sh (sourced, not run):
#   private_postfix NAME SETTINGS   refuse to run outside `mailfakes check --netns`,
#                                   then write main.cf (the shared base plus
#                                   SETTINGS: the route, the queue's knobs) and
#                                   master.cf, bind-mount them with a fresh spool
#                                   over /etc/postfix, /var/spool/postfix and
#                                   /var/lib/postfix (inside the namespace's
#                                   private mounts only), and start Postfix.
# It sets $work (the instance's directory) and $log (its mail log); the
# instance and its mounts go away when the recipe exits.
private_postfix() {
    name=$1
    settings=$2
    [ "$(id -u)" = 0 ] || { echo "$name: needs root inside the namespace" >&2; exit 2; }
    # Only inside a namespace mailfakes made: its own mounts, so the host's Postfix is never touched.
    if [ "${MAILFAKES_NETNS:-}" != 1 ] || [ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/1/ns/mnt)" ]; then
        echo "$name: run it under mailfakes check --netns (it mounts over /etc/postfix)" >&2
        exit 2
    fi
    work=$(mktemp -d "/tmp/mailfakes-$name-XXXXXX")
    log=$work/maillog
    trap private_postfix_cleanup EXIT
    trap 'exit 130' INT # the EXIT trap then cleans up, once
    trap 'exit 143' TERM
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
inet_protocols = all
master_service_disable = inet
$settings
smtp_tls_CAfile = $MAILFAKES_CA_FILE
# TLS 1.2 at least where TLS is required (RFC 8996); Postfix 3.7 still allows 1.0/1.1.
smtp_tls_mandatory_protocols = >=TLSv1.2
smtp_tls_loglevel = 1
# The client's timeout (MAILFAKES_TIMEOUT: a slow scenario's own) for every wait of the conversation,
# each one a limit per read or write (smtp_per_record_deadline = no).
smtp_connect_timeout = ${timeout}s
smtp_helo_timeout = ${timeout}s
smtp_starttls_timeout = ${timeout}s
smtp_mail_timeout = ${timeout}s
smtp_rcpt_timeout = ${timeout}s
smtp_data_init_timeout = ${timeout}s
smtp_data_xfer_timeout = ${timeout}s
smtp_data_done_timeout = ${timeout}s
smtp_rset_timeout = ${timeout}s
smtp_quit_timeout = ${timeout}s
maillog_file = $log
maillog_file_prefixes = /tmp
alias_maps =
alias_database =
CONF
    # The smart host's account, when the scenario gives the client one: SASL (Cyrus, with the
    # PLAIN and LOGIN plug-ins of libsasl2-modules), from a texthash map in the private directory,
    # so no postmap and no password on a command line; plaintext mechanisms inside TLS only.
    if [ -n "${MAILFAKES_AUTH_USER:-}" ]; then
        umask 077
        printf '%s %s:%s\n' "[${MAILFAKES_SMART_HOST}]:${MAILFAKES_PORT}" \
            "$MAILFAKES_AUTH_USER" "$MAILFAKES_AUTH_PASSWORD" > "$work/etc/sasl_passwd"
        umask 022
        cat >> "$work/etc/main.cf" <<CONF
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = texthash:$work/etc/sasl_passwd
smtp_sasl_security_options = noanonymous, noplaintext
smtp_sasl_tls_security_options = noanonymous
CONF
    fi
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
    # A fresh spool's directory tree (owners and modes as Postfix wants them) is made once per
    # Postfix version by post-install, which takes seconds, and copied for each later instance.
    template=${XDG_CACHE_HOME:-$HOME/.cache}/mailfakes/postfix-spool-$(postconf -dh mail_version)
    mkdir -p "${template%/*}"
    [ -d "$template" ] && cp -a "$template/." "$work/spool/"
    mount --bind "$work/etc" /etc/postfix
    mount --bind "$work/spool" /var/spool/postfix
    mount --bind "$work/lib" /var/lib/postfix
    chown postfix /var/lib/postfix
    if [ ! -d "$template" ]; then
        postfix post-install create-missing >/dev/null 2>&1 || true
        cp -a "$work/spool" "$template.$$" && { mv -T "$template.$$" "$template" 2>/dev/null || rm -rf "$template.$$"; }
    fi
    # master -w returns once Postfix runs (what `postfix start` ends with, after its own slow checks).
    "$(postconf -dh daemon_directory)/master" -w || { postfix check; exit 2; }
}

private_postfix_cleanup() {
    postfix abort >/dev/null 2>&1 || true
    for d in /var/lib/postfix /var/spool/postfix /etc/postfix; do umount -l "$d" 2>/dev/null || true; done
    rm -rf "$work"
}

# Wait, at most 30 s, for the first delivery attempt's "status=" line in $log;
# true when it came. Then `sed '/status=/q' "$log"` prints the log up to it.
first_status() {
    _i=0
    while [ $_i -lt 150 ]; do
        grep -q 'status=' "$log" 2>/dev/null && return 0
        sleep 0.2
        _i=$((_i + 1))
    done
    return 1
}
