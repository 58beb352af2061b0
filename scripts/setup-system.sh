#!/usr/bin/env bash
# Idempotent: installs only the Debian packages the tests and benchmarks use that are missing.
# dnsmasq  - real DNS server for MX records in tests
# swaks    - real SMTP client in tests
# postfix  - smtp-source / smtp-sink (tests, bench) and the reference relay peer (bench)
# redis-server - the shared rate-limit store in tests (fleet.rateLimitStore)
# python3-dkim - dkimverify, an independent DKIM verifier in tests (python3-nacl for Ed25519 keys)
set -euo pipefail
need=()
command -v dnsmasq >/dev/null 2>&1 || need+=(dnsmasq)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
{ command -v smtp-source >/dev/null 2>&1 && command -v smtp-sink >/dev/null 2>&1; } || need+=(postfix)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
{ [ -x /usr/bin/dkimverify ] && /usr/bin/python3 -c 'import dkim, nacl' >/dev/null 2>&1; } || need+=(python3-dkim python3-nacl)
command -v unzip >/dev/null 2>&1 || need+=(unzip)
# swaks needs these for --tls
perl -MNet::SSLeay -e1 >/dev/null 2>&1 || need+=(libnet-ssleay-perl)
perl -MIO::Socket::SSL -e1 >/dev/null 2>&1 || need+=(libio-socket-ssl-perl)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
echo "setup: installing missing Debian packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Postfix must not configure or start a system MTA.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's dnsmasq package may start a system instance; tests run their own on loopback ports.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now dnsmasq >/dev/null 2>&1 || true; fi
# Likewise redis-server: tests run their own on loopback ports.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
$SUDO pkill -x dnsmasq >/dev/null 2>&1 || true
