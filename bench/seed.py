"""Realistic data through the public API, concurrently: users, articles with tags, comments,
follows and favourites. Returns what the workloads need (slugs, tokens, credentials)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

PASSWORD = "bench-password-0123"
CONCURRENCY = 16


@dataclass(frozen=True)
class SeedPlan:
    users: int = 50
    articles: int = 500
    tags: int = 30
    comments: int = 2000
    follows_per_user: int = 10
    favourites: int = 2000
    seed: int = 20261126


@dataclass
class Seeded:
    emails: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    slugs: list[str] = field(default_factory=list)
    requests: int = 0


async def _bounded(jobs: Iterable[Callable[[], Awaitable[None]]], limit: int) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[None]]) -> None:
        async with semaphore:
            await job()

    await asyncio.gather(*(run(job) for job in jobs))


def _check(response: httpx.Response, *expected: int) -> dict[str, Any]:
    if response.status_code not in expected:
        raise RuntimeError(f"seeding: {response.request.url} -> {response.status_code}")
    body: dict[str, Any] = response.json() if response.content else {}
    return body


async def seed(base_url: str, plan: SeedPlan) -> Seeded:
    rng = random.Random(plan.seed)  # test data, not secrets
    tag_pool = [f"tag{i:02d}" for i in range(plan.tags)]
    result = Seeded()
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0, limits=limits) as client:

        async def post(url: str, token: str | None, body: object, *expected: int) -> Any:
            headers = {"Authorization": f"Token {token}"} if token else {}
            result.requests += 1
            return _check(await client.post(url, json=body, headers=headers), *expected)

        tokens: dict[int, str] = {}

        def register(i: int) -> Callable[[], Awaitable[None]]:
            async def job() -> None:
                user = {"username": f"bencher{i}", "email": f"bencher{i}@example.com"}
                body = await post("/api/users", None, {"user": {**user, "password": PASSWORD}}, 201)
                tokens[i] = body["user"]["token"]

            return job

        await _bounded((register(i) for i in range(plan.users)), CONCURRENCY)
        result.emails = [f"bencher{i}@example.com" for i in range(plan.users)]
        result.tokens = [tokens[i] for i in range(plan.users)]

        slugs: list[str] = []

        def article(n: int) -> Callable[[], Awaitable[None]]:
            async def job() -> None:
                payload = {
                    "title": f"Benchmark article {n}: notes on {rng.choice(tag_pool)}",
                    "description": "A realistic description of moderate length for lists.",
                    "body": "Lorem ipsum dolor sit amet. " * rng.randint(10, 80),
                    "tagList": rng.sample(tag_pool, rng.randint(1, 4)),
                }
                token = result.tokens[n % plan.users]
                body = await post("/api/articles", token, {"article": payload}, 201)
                slugs.append(body["article"]["slug"])

            return job

        await _bounded((article(n) for n in range(plan.articles)), CONCURRENCY)
        result.slugs = slugs

        def comment(n: int) -> Callable[[], Awaitable[None]]:
            async def job() -> None:
                body = {"comment": {"body": f"Comment {n}: " + "thoughtful words " * 5}}
                url = f"/api/articles/{rng.choice(slugs)}/comments"
                await post(url, rng.choice(result.tokens), body, 200)

            return job

        def follow(i: int, j: int) -> Callable[[], Awaitable[None]]:
            async def job() -> None:
                await post(f"/api/profiles/bencher{j}/follow", result.tokens[i], None, 200)

            return job

        def favourite() -> Callable[[], Awaitable[None]]:
            async def job() -> None:
                url = f"/api/articles/{rng.choice(slugs)}/favorite"
                await post(url, rng.choice(result.tokens), None, 200)

            return job

        jobs: list[Callable[[], Awaitable[None]]] = [comment(n) for n in range(plan.comments)]
        for i in range(plan.users):
            others = [j for j in range(plan.users) if j != i]
            jobs += [follow(i, j) for j in rng.sample(others, plan.follows_per_user)]
        jobs += [favourite() for _ in range(plan.favourites)]
        rng.shuffle(jobs)
        await _bounded(jobs, CONCURRENCY)
    return result
