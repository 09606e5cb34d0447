"""Slugs: the title, slugified, plus a short random suffix.

The suffix keeps slugs unique across authors and runs (the RealWorld test suite creates the same
title on every run); the unique index is the final word, and a collision is retried.
"""

from __future__ import annotations

import re
import secrets
import unicodedata

MAX_BASE_LENGTH = 80
SUFFIX_BYTES = 4  # 8 hex characters


def slugify(title: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    base = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    return base[:MAX_BASE_LENGTH].rstrip("-") or "article"


def new_slug(title: str) -> str:
    return f"{slugify(title)}-{secrets.token_hex(SUFFIX_BYTES)}"
