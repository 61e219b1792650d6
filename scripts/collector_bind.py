#!/usr/bin/env python3
"""Where `make collector` binds, from COLLECTOR_URL (the URL the nodes push to).

Prints "HOST PORT" on stdout and one line saying why on stderr; a bad URL prints
"error: ..." on stderr, nothing on stdout, and exits 2.

- a loopback URL (127.0.0.0/8, ::1, localhost) binds that address: nothing
  outside this machine can reach the collector;
- any other URL means the nodes must reach it: bind that address when it is one
  of this machine's, else (a public/NAT address, a DNS name served by a load
  balancer) all addresses, 0.0.0.0 (or :: for an IPv6 URL). The collector
  refuses to start without its token, and the Terraform security group opens
  the port to the fleet's own nodes only.

COLLECTOR_BIND=ADDR (argument --bind) overrides the address. The port is the
URL's, else 8080: the collector port everywhere (Terraform, fleet.env.example).
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from urllib.parse import urlsplit

DEFAULT_PORT = 8080


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_local_address(host: str) -> bool:
    """True when this machine can bind `host` (it is one of its addresses)."""
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, socktype, proto, _, addr in infos:
        try:
            with socket.socket(family, socktype, proto) as s:
                s.bind(addr)
                return True
        except OSError:
            continue
    return False


def resolve(url: str, bind: str = "") -> tuple[str, int, str]:
    """(address, port, why) for a collector URL; ValueError with a one-line reason."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"COLLECTOR_URL must look like http://HOST:PORT, got {url!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"COLLECTOR_URL has a bad port: {url!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"COLLECTOR_URL port must be 1..65535: {url!r}")
    host = parts.hostname
    if bind:
        return bind, port, f"binding {bind}:{port} (COLLECTOR_BIND)"
    if _is_loopback(host):
        return host, port, (f"COLLECTOR_URL {url} is loopback: binding {host}:{port}, "
                            "reachable from this machine only")
    if _is_local_address(host):
        return host, port, (f"COLLECTOR_URL {url} names this machine's address {host}: binding "
                            f"{host}:{port} so the nodes can reach it (token required)")
    anyaddr = "::" if ":" in host else "0.0.0.0"
    return anyaddr, port, (f"COLLECTOR_URL {url} names {host}, not loopback and not an address of "
                           f"this machine (NAT, public IP or DNS name): binding {anyaddr}:{port} so the "
                           "nodes can reach it (token required; COLLECTOR_BIND=ADDR binds one address)")


def main(argv: list[str]) -> int:
    args = list(argv)
    bind = ""
    if "--bind" in args:
        i = args.index("--bind")
        bind = args[i + 1] if i + 1 < len(args) else ""
        del args[i:i + 2]
    if len(args) != 1:
        print("error: usage: collector_bind.py [--bind ADDR] COLLECTOR_URL", file=sys.stderr)
        return 2
    try:
        host, port, why = resolve(args[0], bind.strip())
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"collector: {why}", file=sys.stderr)
    print(host, port)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
