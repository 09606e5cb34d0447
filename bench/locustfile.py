"""The locust fallback of bench/wrk/workload.lua (used when wrk is not installed).

The bench passes the workload in the environment: BENCH_MODE (get, list, article, feed, write,
login), BENCH_PATH (for get) and BENCH_ARGS (newline-separated, as for the wrk script).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from locust import FastHttpUser, task

MODE = os.environ.get("BENCH_MODE", "get")
PATH = os.environ.get("BENCH_PATH", "/")
ARGS = [a for a in os.environ.get("BENCH_ARGS", "").split("\n") if a]


def _lines(index: int) -> list[str]:
    if len(ARGS) <= index:
        return []
    return [line for line in Path(ARGS[index]).read_text().splitlines() if line]


SLUGS = _lines(0) if MODE in ("article", "write") else []
# A token file: the writers', the feed's readers', or (list and article) signed-in readers'.
TOKENS = _lines(1) if MODE in ("write", "list", "article") else _lines(0) if MODE == "feed" else []
CREDS = [line.split(" ", 1) for line in _lines(0)] if MODE == "login" else []
MAX_OFFSET = int(ARGS[0]) if MODE == "list" and ARGS else 480
COMMENT = {"comment": {"body": "A benchmark comment, short and to the point."}}


class BenchUser(FastHttpUser):
    # No think time: each user is one connection sending back to back, like wrk.
    def _send(self, method: str, url: str, name: str, **kwargs: object) -> None:
        with self.rest(method, url, name=name, **kwargs) as response:  # type: ignore[arg-type]
            if not 200 <= response.status_code < 300:
                response.failure(f"status {response.status_code}")  # type: ignore[no-untyped-call]

    @staticmethod
    def _reader() -> dict[str, str]:
        """A random signed-in reader's header, or none when no tokens were given."""
        return {"Authorization": f"Token {random.choice(TOKENS)}"} if TOKENS else {}

    @task
    def one(self) -> None:
        if MODE == "list":
            offset = random.randint(0, MAX_OFFSET)
            url = f"/api/articles?limit=20&offset={offset}"
            self._send("GET", url, "list", headers=self._reader())
        elif MODE == "article":
            url = f"/api/articles/{random.choice(SLUGS)}"
            self._send("GET", url, "article", headers=self._reader())
        elif MODE == "feed":
            headers = {"Authorization": f"Token {random.choice(TOKENS)}"}
            self._send("GET", "/api/articles/feed?limit=20", "feed", headers=headers)
        elif MODE == "write":
            self._write()
        elif MODE == "login":
            email, password = random.choice(CREDS)
            body = {"user": {"email": email, "password": password}}
            self._send("POST", "/api/users/login", "login", json=body)
        else:
            self._send("GET", PATH, "get")

    def _write(self) -> None:
        headers = {"Authorization": f"Token {random.choice(TOKENS)}"}
        slug = random.choice(SLUGS)
        op = random.randint(1, 3)
        if op == 1:
            url = f"/api/articles/{slug}/comments"
            self._send("POST", url, "comment", json=COMMENT, headers=headers)
        elif op == 2:
            self._send("POST", f"/api/articles/{slug}/favorite", "favourite", headers=headers)
        else:
            self._send("DELETE", f"/api/articles/{slug}/favorite", "unfavourite", headers=headers)
