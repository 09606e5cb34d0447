"""Checks on the object-storage settings that involve several fields.

They run when Settings are built: `UPLOAD_STORAGE=s3` without a bucket or keys stops the process
at start-up with one line naming every missing setting (never their values), instead of the
first upload failing with a 503.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def _http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def s3_setting_problems(
    *,
    storage: str,
    bucket: str | None,
    access_key_id: str | None,
    has_secret: bool,
    endpoint_url: str | None,
    public_base_url: str | None,
) -> list[str]:
    """Every problem at once: an operator fixes the environment in one round trip."""
    if storage != "s3":
        return []
    problems = [
        f"{name} is required when UPLOAD_STORAGE=s3"
        for name, present in (
            ("S3_BUCKET", bool(bucket)),
            ("S3_ACCESS_KEY_ID", bool(access_key_id)),
            ("S3_SECRET_ACCESS_KEY", has_secret),
        )
        if not present
    ]
    if endpoint_url and not _http_url(endpoint_url):
        problems.append("S3_ENDPOINT_URL must be an http:// or https:// URL")
    if public_base_url and not _http_url(public_base_url):
        problems.append("S3_PUBLIC_BASE_URL must be an http:// or https:// URL")
    return problems
