"""The reads whose cost must stay flat from a small set to a large one (issue 15), as wrk loads
(bench/wrk/workload.lua, mode `paths`: a random line of a file of paths, signed in or not).

Each size gets its own files: the special cases have the same names in every set (the popular
and the rare tag, `scale_prolific`, `scale_fan`, `scale_reader`), but sampled slugs and
usernames are the set's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import load as loads

LIST = "/api/articles?limit=20"


@dataclass(frozen=True)
class ScaleRead:
    name: str
    signed_in: bool = False
    offset: int = 0  # the global list's page after this many articles

    def paths(self, ids: Mapping[str, Any]) -> list[str]:
        fixed = {
            "list": [LIST],
            "list signed in": [LIST],
            "list offset 1000": [f"{LIST}&offset={self.offset}"],
            "list offset 10000": [f"{LIST}&offset={self.offset}"],
            "tag popular": [f"{LIST}&tag={ids['popular_tag']}"],
            "tag rare": [f"{LIST}&tag={ids['rare_tag']}"],
            "by author": [f"{LIST}&author={ids['prolific']}"],
            "by favorited": [f"{LIST}&favorited={ids['fan']}"],
            "feed": ["/api/articles/feed?limit=20"],
            "article": [f"/api/articles/{slug}" for slug in ids["slugs"]],
            "comments": [f"/api/articles/{ids['hot_article']}/comments"],
            "profile": [f"/api/profiles/{name}" for name in ids["usernames"]],
            "tags": ["/api/tags"],
        }
        return fixed[self.name]


READS = (
    ScaleRead("list"),
    ScaleRead("list signed in", signed_in=True),
    ScaleRead("list offset 1000", offset=1_000),
    ScaleRead("list offset 10000", offset=10_000),
    ScaleRead("tag popular"),
    ScaleRead("tag rare"),
    ScaleRead("by author"),
    ScaleRead("by favorited"),
    ScaleRead("feed", signed_in=True),
    ScaleRead("article"),
    ScaleRead("comments"),
    ScaleRead("profile"),
    ScaleRead("tags"),
)


def sign_in(base_url: str, ids: Mapping[str, Any]) -> str:
    """A token for the reader, from the app's login endpoint."""
    credentials = {"email": ids["reader"]["email"], "password": ids["password"]}
    response = httpx.post(f"{base_url}/api/users/login", json={"user": credentials}, timeout=30)
    response.raise_for_status()
    token: str = response.json()["user"]["token"]
    return token


def load_for(
    read: ScaleRead, ids: Mapping[str, Any], token: str, workdir: Path, size: str, conns: int
) -> loads.Load:
    path = workdir / f"paths-{read.name.replace(' ', '-')}-{size}.txt"
    path.write_text("\n".join(read.paths(ids)) + "\n")
    args = (str(path), token) if read.signed_in else (str(path),)
    return loads.Load("paths", args=args, connections=conns)


def first_request(
    read: ScaleRead, ids: Mapping[str, Any], token: str
) -> tuple[str, dict[str, str]]:
    """One request of the workload (the first path), for the plans."""
    headers = {"Authorization": f"Token {token}"} if read.signed_in else {}
    return read.paths(ids)[0], headers
