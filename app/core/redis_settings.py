"""Checks on the Redis settings that involve several fields (the URL, Sentinels, TLS files).

They run when Settings are built, so a mistyped Sentinel list or a missing CA file stops the
process at start-up with a line naming the setting, instead of surfacing later as "Redis down".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

REDIS_SCHEMES = ("redis", "rediss", "unix")


def parse_host_port(item: str) -> tuple[str, int]:
    """`host:port` or `[v6 address]:port`; ValueError naming the item otherwise."""
    text = item.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.partition(":")
    if not sep or not host or ":" in port:
        raise ValueError(f"{item!r} is not host:port (an IPv6 address goes in brackets)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{item!r} has no valid port (1-65535)")
    return host, int(port)


def redis_setting_problems(
    *,
    url: str | None,
    sentinels: Sequence[str],
    master: str | None,
    tls_files: Mapping[str, str | None],
) -> list[str]:
    """Every problem at once: an operator fixes the environment in one round trip."""
    problems: list[str] = []
    scheme = urlsplit(url).scheme.lower() if url else ""
    if url:
        if scheme not in REDIS_SCHEMES:
            problems.append("REDIS_URL must start with redis://, rediss:// (TLS) or unix://")
        tls_options = sorted(k for k in parse_qs(urlsplit(url).query) if k.startswith("ssl"))
        if tls_options:
            # One source for TLS: an `ssl_cert_reqs=none` hidden in a URL would switch
            # verification off where nobody looks for it.
            problems.append(
                f"REDIS_URL carries TLS options ({', '.join(tls_options)}): use the "
                "REDIS_TLS_* settings instead"
            )
    for item in sentinels:
        try:
            parse_host_port(item)
        except ValueError as exc:
            problems.append(f"REDIS_SENTINELS: {exc}")
    if sentinels:
        if not master:
            problems.append("REDIS_SENTINELS is set: REDIS_SENTINEL_MASTER must name the primary")
        if not url:
            problems.append(
                "REDIS_SENTINELS is set: REDIS_URL is still required (its database number, "
                "credentials and scheme are used; its host is replaced by the Sentinels' answer)"
            )
        elif scheme == "unix":
            problems.append("REDIS_SENTINELS cannot be combined with a unix:// REDIS_URL")
    given = {name: path for name, path in tls_files.items() if path}
    if given and scheme != "rediss":
        problems.append(f"{', '.join(sorted(given))} set, but REDIS_URL is not rediss://")
    for name, path in given.items():
        if not os.path.isfile(path):
            problems.append(f"{name}: no such file: {path}")
    if bool(tls_files.get("REDIS_TLS_CERT_FILE")) != bool(tls_files.get("REDIS_TLS_KEY_FILE")):
        problems.append("REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together (set both)")
    return problems
