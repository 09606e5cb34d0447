"""Bulk loading of a production-size data set, inside Postgres (INSERT ... SELECT over
generate_series), into a database that `alembic upgrade head` has built.

Deterministic: every choice is a hash of the row's number and the plan's seed (hashint8extended,
no random()), so a size always holds the same rows. Idempotent: the set is described by a
manifest row in the schema `bench_scale` (the plan, the special cases' names, how long each
step took); a database whose manifest matches the plan is reused as it is, one without a
manifest is emptied and loaded again.

The app's tables are loaded with their indexes and constraints in place (nothing the migrations
own is dropped or altered), in a session with `session_replication_role = replica`: for that
session only, row triggers and foreign-key checks do not fire (pg_restore's way). The rows are
consistent by construction (tests/integration/test_bench_scale.py checks it), and the counters
the triggers would have kept are set afterwards. Loading through the triggers is not an option
at this size: with the "maintained counts" triggers, 28k article_tags rows took 25 s (each
updates one of a few tag rows, whose versions pile up in the one transaction).

Denormalised figures are made consistent by the `@recompute` steps: each checks that its
column or table exists in the schema of the day and sets it from the rows, so a counter added
by a later migration needs one function here. They run again whenever the schema's revision
differs from the one recorded at load time (after `alembic upgrade head` has migrated the
loaded set, which is the online migration at scale). When the app has `app.db.recount`, its
own check then confirms that no count disagrees with the rows.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import asyncpg

from bench.scale.plan import (
    EPOCH,
    FAN_ID,
    FIRST_STAR_ID,
    PROLIFIC_ID,
    RARE_TAG,
    READER_ID,
    ScalePlan,
)

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "bench-scale-password-0123"
# Strides for "the j-th favourite/follow of row x": (x's hash + j * stride) mod the number of
# regular users never repeats within a row while j < that number, the stride being coprime to it.
FAVORITE_STRIDE = 104_729
FOLLOW_STRIDE = 1_299_709
SAMPLES = 200  # slugs and usernames handed to the single-article and profile workloads
# Raised whenever the rows a plan gives change: a set loaded by another version is loaded again.
LOADER_VERSION = 2

Step = Callable[[asyncpg.Connection, ScalePlan], Awaitable[None]]
RECOMPUTES: list[tuple[str, Step]] = []


def recompute(name: str) -> Callable[[Step], Step]:
    """Register a step that makes one denormalised figure agree with the rows."""

    def register(step: Step) -> Step:
        RECOMPUTES.append((name, step))
        return step

    return register


@dataclass
class Manifest:
    size: str
    plan: dict[str, Any]
    identities: dict[str, Any]
    steps: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    revision: str = ""
    reused: bool = False
    counts: dict[str, int] = field(default_factory=dict)


def asyncpg_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def migrate(url: str) -> None:
    """`alembic upgrade head`, as bench/environment.py and `make migrate` run it."""
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json"},
        check=True,
        capture_output=True,
    )


HELPERS = """
CREATE SCHEMA IF NOT EXISTS bench_scale;
CREATE TABLE IF NOT EXISTS bench_scale.manifest (
    size text PRIMARY KEY, plan jsonb NOT NULL, identities jsonb NOT NULL, steps jsonb NOT NULL,
    seconds float8 NOT NULL, revision text NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now()
);
-- A non-negative hash of (x, salt), and a uniform number in [0, 1) from it.
CREATE OR REPLACE FUNCTION bench_scale.h(x bigint, salt bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
    $$ SELECT hashint8extended(x, salt) & 9223372036854775807 $$;
CREATE OR REPLACE FUNCTION bench_scale.u(x bigint, salt bigint) RETURNS float8
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
    $$ SELECT ((hashint8extended(x, salt) >> 11) & 9007199254740991)::float8
              / 9007199254740992.0 $$;
"""


def _salt(plan: ScalePlan, k: int) -> int:
    return plan.seed * 100 + k


def _created_at(plan: ScalePlan, column: str, total: int) -> str:
    seconds = plan.span_days * 86_400
    return f"timestamptz '{EPOCH}' + ({column}::float8 * {seconds} / {total}) * interval '1 second'"


def _favorites_of(plan: ScalePlan, article: str) -> str:
    """How many regular users favourite `article` (exponential spread around the mean)."""
    u = f"bench_scale.u({article}, {_salt(plan, 5)})"
    mean = plan.favorites_per_article
    return f"least({plan.regular_users - 1}, floor(-ln(1 - {u}) * {mean} + 0.5))::int"


def _is_fan_article(plan: ScalePlan, article: str) -> str:
    return f"({article} % {plan.fan_every} = {plan.fan_every // 2})"


async def _users(conn: asyncpg.Connection, plan: ScalePlan) -> None:
    from app.core.security import hash_password

    password_hash = await hash_password(PASSWORD)  # one Argon2id hash shared by every user
    stars = plan.first_regular_id
    await conn.execute(
        f"""
        INSERT INTO users (id, email, username, password_hash, created_at, updated_at)
        SELECT i, n.name || '@scale.example', n.name, $1, n.ts, n.ts
        FROM generate_series(1, {plan.users}) i,
        LATERAL (SELECT CASE
            WHEN i = {READER_ID} THEN 'scale_reader'
            WHEN i = {FAN_ID} THEN 'scale_fan'
            WHEN i = {PROLIFIC_ID} THEN 'scale_prolific'
            WHEN i < {stars} THEN 'scale_star' || (i - {FIRST_STAR_ID} + 1)
            ELSE 'scale_user' || i END AS name,
            {_created_at(plan, "i", plan.users)} - interval '30 days' AS ts) n
        """,
        password_hash,
    )


async def _tags(conn: asyncpg.Connection, plan: ScalePlan) -> None:
    await conn.execute(
        f"""
        INSERT INTO tags (id, name)
        SELECT k, 'tag' || lpad(k::text, 4, '0') FROM generate_series(1, {plan.tags}) k
        UNION ALL SELECT {plan.tags + 1}, '{RARE_TAG}'
        """
    )


async def _articles(conn: asyncpg.Connection, plan: ScalePlan) -> None:
    regular = f"{plan.first_regular_id} + bench_scale.h(a, {_salt(plan, 1)}) % {plan.regular_users}"
    favorites = f"{_favorites_of(plan, 'a')} + {_is_fan_article(plan, 'a')}::int"
    words = f"10 + bench_scale.h(a, {_salt(plan, 2)}) % 71"
    await conn.execute(
        f"""
        INSERT INTO articles (id, slug, title, description, body, author_id, favorites_count,
                              created_at, updated_at)
        SELECT a,
               'scale-article-' || a || '-' || to_hex(bench_scale.h(a, {_salt(plan, 3)}) % 65536),
               'Scale article ' || a || ': notes on a subject worth reading about',
               'A realistic description of moderate length for the list pages.',
               repeat('Lorem ipsum dolor sit amet. ', ({words})::int),
               CASE WHEN a % {plan.prolific_every} = 0 THEN {PROLIFIC_ID} ELSE {regular} END,
               {favorites},
               t.ts, t.ts
        FROM generate_series(1, {plan.articles}) a,
        LATERAL (SELECT {_created_at(plan, "a", plan.articles)} AS ts) t
        """
    )


async def _article_tags(conn: asyncpg.Connection, plan: ScalePlan) -> None:
    # Tag rank r drawn log-uniformly (Zipf with s = 1, continuous form): P(r) ~ 1/r, so the
    # first tag is on about a quarter of the articles and the last on a handful per 10k.
    rank = f"floor(exp(bench_scale.u(a * 8 + j, {_salt(plan, 4)}) * ln({plan.tags} + 1)))::int"
    count = f"1 + floor(bench_scale.u(a, {_salt(plan, 6)}) * 5)::int"
    await conn.execute(
        f"""
        INSERT INTO article_tags (article_id, tag_id)
        SELECT a, least({plan.tags}, {rank})
        FROM generate_series(1, {plan.articles}) a, generate_series(1, {count}) j
        ON CONFLICT DO NOTHING
        """
    )
    await conn.execute(
        "INSERT INTO article_tags (article_id, tag_id) SELECT unnest($1::bigint[]), $2",
        plan.rare_article_ids(),
        plan.tags + 1,
    )


async def _favorites(conn: asyncpg.Connection, plan: ScalePlan) -> None:
    n = plan.regular_users
    user = (
        f"{plan.first_regular_id} + "
        f"(bench_scale.h(ar.id, {_salt(plan, 7)}) % {n} + j::bigint * {FAVORITE_STRIDE}) % {n}"
    )
    await conn.execute(
        f"""
        INSERT INTO favorites (user_id, article_id, created_at)
        SELECT {user}, ar.id, ar.created_at + j * interval '37 minutes'
        FROM articles ar, generate_series(1, {_favorites_of(plan, "ar.id")}) j
        """
    )
    await conn.execute(
        f"""
        INSERT INTO favorites (user_id, article_id, created_at)
        SELECT {FAN_ID}, id, created_at + interval '1 hour' FROM articles
        WHERE {_is_fan_article(plan, "id")}
        """
    )


async def _follows(conn: asyncpg.Connection, plan: ScalePlan) -> None:
    first, n = plan.first_regular_id, plan.regular_users
    # Every regular user follows every star.
    await conn.execute(
        f"""
        INSERT INTO follows (follower_id, followee_id, created_at)
        SELECT f, s, timestamptz '{EPOCH}'
        FROM generate_series({first}, {plan.users}) f,
             generate_series({FIRST_STAR_ID}, {first - 1}) s
        """
    )
    await conn.execute(
        f"""
        INSERT INTO follows (follower_id, followee_id, created_at)
        SELECT {READER_ID}, {first} + (bench_scale.h(0, {_salt(plan, 8)}) % {n}
                                       + j::bigint * {FOLLOW_STRIDE}) % {n}, timestamptz '{EPOCH}'
        FROM generate_series(0, {plan.reader_follows - 1}) j
        """
    )
    hashed = f"bench_scale.h(f, {_salt(plan, 9)}) % {n}"
    followee = f"{first} + ({hashed} + j::bigint * {FOLLOW_STRIDE}) % {n}"
    await conn.execute(
        f"""
        INSERT INTO follows (follower_id, followee_id, created_at)
        SELECT f, followee, timestamptz '{EPOCH}' + interval '1 day'
        FROM generate_series({first}, {plan.users}) f,
             generate_series(1, {plan.follows_per_user}) j,
        LATERAL (SELECT {followee} AS followee) x
        WHERE followee <> f
        """
    )


async def _comments(conn: asyncpg.Connection, plan: ScalePlan) -> None:
    n = plan.regular_users
    mean = plan.comments_per_article
    spread = f"floor(-ln(1 - bench_scale.u(ar.id, {_salt(plan, 10)})) * {mean} + 0.5)::int"
    many = f"CASE WHEN ar.id = {plan.hot_article_id} THEN {plan.hot_comments} ELSE {spread} END"
    author = f"{plan.first_regular_id} + bench_scale.h(ar.id * 4096 + j, {_salt(plan, 11)}) % {n}"
    await conn.execute(
        f"""
        INSERT INTO comments (body, article_id, author_id, created_at, updated_at)
        SELECT 'Comment ' || j || ': ' || repeat('thoughtful words ', 1 + (j % 8)),
               ar.id, {author}, t.ts, t.ts
        FROM articles ar, generate_series(1, {many}) j,
        LATERAL (SELECT ar.created_at + j * interval '7 minutes' AS ts) t
        """
    )


async def _set_count(
    conn: asyncpg.Connection, table: str, column: str, key: str, source: str, source_key: str
) -> None:
    """`table.column` = the number of `source` rows whose `source_key` is the row's `key`;
    only the rows whose figure is wrong are written."""
    if not await has_column(conn, table, column):
        return
    await conn.execute(
        f"""
        UPDATE {table} t SET {column} = c.n
        FROM (SELECT r.{key} AS k, count(s.{source_key}) AS n
              FROM {table} r LEFT JOIN {source} s ON s.{source_key} = r.{key}
              GROUP BY r.{key}) c
        WHERE t.{key} = c.k AND t.{column} IS DISTINCT FROM c.n
        """
    )


@recompute("articles.favorites_count")
async def _article_favorites(conn: asyncpg.Connection, plan: ScalePlan) -> None:
    await _set_count(conn, "articles", "favorites_count", "id", "favorites", "article_id")


@recompute("users.articles_count")
async def _user_articles(conn: asyncpg.Connection, plan: ScalePlan) -> None:
    await _set_count(conn, "users", "articles_count", "id", "articles", "author_id")


@recompute("users.latest_article_id")
async def _user_newest_article(conn: asyncpg.Connection, plan: ScalePlan) -> None:
    if not await has_column(conn, "users", "latest_article_id"):
        return
    await conn.execute(
        """
        UPDATE users u SET latest_article_id = c.newest
        FROM (SELECT author_id, max(id) AS newest FROM articles GROUP BY author_id) c
        WHERE u.id = c.author_id AND u.latest_article_id IS DISTINCT FROM c.newest
        """
    )


@recompute("users.favorites_count")
async def _user_favorites(conn: asyncpg.Connection, plan: ScalePlan) -> None:
    await _set_count(conn, "users", "favorites_count", "id", "favorites", "user_id")


@recompute("tags.articles_count")
async def _tag_articles(conn: asyncpg.Connection, plan: ScalePlan) -> None:
    await _set_count(conn, "tags", "articles_count", "id", "article_tags", "tag_id")


async def _article_trigger_figure(conn: asyncpg.Connection, pattern: str) -> int | None:
    """A constant of the articles trigger's function (slots, bucket width), as the schema of
    the day has it."""
    source = await conn.fetchval(
        "SELECT prosrc FROM pg_proc WHERE proname = 'conduit_count_article' LIMIT 1"
    )
    found = re.search(pattern, source or "")
    return int(found.group(1)) if found else None


@recompute("article_totals")
async def _article_totals(conn: asyncpg.Connection, plan: ScalePlan) -> None:
    """The global count in slots: article `id` counts in slot `id % <number of slots>`."""
    if not await has_column(conn, "article_totals", "articles"):
        return
    slots = await _article_trigger_figure(conn, r"NEW\.id\s*%\s*(\d+)")
    if slots is None:
        slots = int(await conn.fetchval("SELECT count(*) FROM article_totals"))
    if slots == 0:
        return
    await conn.execute(
        f"""
        INSERT INTO article_totals AS t (slot, articles)
        SELECT s, coalesce(c.n, 0) FROM generate_series(0, {slots - 1}) s
        LEFT JOIN (SELECT id % {slots} AS slot, count(*) AS n FROM articles GROUP BY 1) c
          ON c.slot = s
        ON CONFLICT (slot) DO UPDATE SET articles = EXCLUDED.articles
        WHERE t.articles IS DISTINCT FROM EXCLUDED.articles
        """
    )


@recompute("article_id_buckets")
async def _article_buckets(conn: asyncpg.Connection, plan: ScalePlan) -> None:
    """Articles per bucket of consecutive ids (deep pages of the global list seek with them)."""
    if not await has_column(conn, "article_id_buckets", "articles"):
        return
    width = await _article_trigger_figure(conn, r"NEW\.id\s*/\s*(\d+)")
    if width is None:
        raise RuntimeError("article_id_buckets exists but the articles trigger names no width")
    await conn.execute(
        f"""
        INSERT INTO article_id_buckets AS b (bucket, articles)
        SELECT id / {width}, count(*) FROM articles GROUP BY 1
        ON CONFLICT (bucket) DO UPDATE SET articles = EXCLUDED.articles
        WHERE b.articles IS DISTINCT FROM EXCLUDED.articles
        """
    )
    await conn.execute(
        f"""
        UPDATE article_id_buckets b SET articles = 0
        WHERE articles <> 0 AND NOT EXISTS (
            SELECT 1 FROM articles a
            WHERE a.id >= b.bucket * {width} AND a.id < (b.bucket + 1) * {width})
        """
    )


async def has_column(conn: asyncpg.Connection, table: str, column: str) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2",
        table,
        column,
    )
    return found is not None


async def _app_recount_mismatches(conn: asyncpg.Connection) -> int | None:
    """The app's own check of its maintained counts (None: this app version has none)."""
    try:
        recount = importlib.import_module("app.db.recount")
    except ImportError:
        return None
    return len(await recount.mismatches(conn))


async def _sequences(conn: asyncpg.Connection, plan: ScalePlan) -> None:
    """Ids were given explicitly: the identities continue after them (the app inserts too)."""
    for table in ("users", "tags", "articles", "comments"):
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
        )


LOAD_STEPS: list[tuple[str, Step]] = [
    ("users", _users),
    ("tags", _tags),
    ("articles", _articles),
    ("article_tags", _article_tags),
    ("favorites", _favorites),
    ("follows", _follows),
    ("comments", _comments),
    ("sequences", _sequences),
]
TABLES = ("users", "tags", "articles", "article_tags", "favorites", "follows", "comments")


async def _identities(conn: asyncpg.Connection, plan: ScalePlan) -> dict[str, Any]:
    spread = [1 + k * plan.articles // SAMPLES for k in range(SAMPLES)]
    slugs = await conn.fetch("SELECT slug FROM articles WHERE id = ANY($1) ORDER BY id", spread)
    hot = await conn.fetchval("SELECT slug FROM articles WHERE id = $1", plan.hot_article_id)
    people = [plan.first_regular_id + k * plan.regular_users // SAMPLES for k in range(SAMPLES)]
    names = await conn.fetch("SELECT username FROM users WHERE id = ANY($1) ORDER BY id", people)
    popular = await conn.fetchval(
        "SELECT t.name FROM tags t JOIN article_tags at ON at.tag_id = t.id "
        "GROUP BY t.id ORDER BY count(*) DESC, t.name LIMIT 1"
    )
    stars = await conn.fetch(
        "SELECT username FROM users WHERE id >= $1 AND id < $2 ORDER BY id",
        FIRST_STAR_ID,
        plan.first_regular_id,
    )
    return {
        "password": PASSWORD,
        "reader": {"username": "scale_reader", "email": "scale_reader@scale.example"},
        "fan": "scale_fan",
        "prolific": "scale_prolific",
        "stars": [r["username"] for r in stars],
        "popular_tag": popular,
        "rare_tag": RARE_TAG,
        "hot_article": hot,
        "slugs": [r["slug"] for r in slugs],
        "usernames": [r["username"] for r in names],
    }


async def _revision(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SELECT string_agg(version_num, ',') FROM alembic_version"))


async def _recompute(conn: asyncpg.Connection, plan: ScalePlan, out: TextIO) -> dict[str, float]:
    took: dict[str, float] = {}
    for name, step in RECOMPUTES:
        started = time.monotonic()
        await step(conn, plan)
        took[f"recompute {name}"] = time.monotonic() - started
        out.write(f"    recompute {name}: {took[f'recompute {name}']:.1f}s\n")
    started = time.monotonic()
    wrong = await _app_recount_mismatches(conn)
    if wrong is not None:
        took["app recount check"] = time.monotonic() - started
        seconds = took["app recount check"]
        out.write(f"    app.db.recount check: {wrong} mismatches, {seconds:.1f}s\n")
        if wrong:
            raise RuntimeError(f"{wrong} maintained counts disagree with the rows after loading")
    return took


async def _vacuum_analyze(conn: asyncpg.Connection) -> None:
    # Sets the visibility map as a long-lived database has it (index-only scans), and leaves
    # autovacuum nothing to do while the workloads are measured.
    for table in TABLES:
        await conn.execute(f"VACUUM (ANALYZE) {table}")


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}


async def ensure_loaded(
    url: str, size: str, plan: ScalePlan, *, reload: bool = False, out: TextIO = sys.stderr
) -> Manifest:
    """The set `size` in the migrated database at `url`: reused when loaded, loaded otherwise."""
    plan.check()
    for stride in (FAVORITE_STRIDE, FOLLOW_STRIDE):
        if math.gcd(stride, plan.regular_users) != 1:
            raise ValueError(f"{plan.regular_users} regular users: pick a stride coprime to it")
    conn = await asyncpg.connect(asyncpg_url(url))
    try:
        await conn.execute(HELPERS)
        row = await conn.fetchrow("SELECT * FROM bench_scale.manifest WHERE size = $1", size)
        revision = await _revision(conn)
        if row is not None and not reload and json.loads(row["plan"]) == _described(plan):
            manifest = Manifest(
                size=size,
                plan=_described(plan),
                identities=json.loads(row["identities"]),
                steps=dict(json.loads(row["steps"])),  # [name, seconds] pairs, in order
                seconds=float(row["seconds"]),
                revision=row["revision"],
                reused=True,
            )
            if row["revision"] != revision:
                out.write(f"  {size}: schema {row['revision']} -> {revision}, recomputing\n")
                await _recompute(conn, plan, out)
                await _vacuum_analyze(conn)
                await conn.execute(
                    "UPDATE bench_scale.manifest SET revision = $1 WHERE size = $2", revision, size
                )
                manifest.revision = revision
            manifest.counts = await counts(conn)
            return manifest
        return await _load(conn, size, plan, revision, out)
    finally:
        await conn.close()


async def _load(
    conn: asyncpg.Connection, size: str, plan: ScalePlan, revision: str, out: TextIO
) -> Manifest:
    out.write(f"  loading {size}: {plan.articles:,} articles, {plan.users:,} users ...\n")
    await conn.execute("DELETE FROM bench_scale.manifest WHERE size = $1", size)
    await conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    steps: dict[str, float] = {}
    started = time.monotonic()
    await conn.execute("SET session_replication_role = replica")
    for name, step in LOAD_STEPS:
        began = time.monotonic()
        async with conn.transaction():
            await step(conn, plan)
        steps[name] = time.monotonic() - began
        out.write(f"    {name}: {steps[name]:.1f}s\n")
    await conn.execute("RESET session_replication_role")
    steps.update(await _recompute(conn, plan, out))
    began = time.monotonic()
    await _vacuum_analyze(conn)
    steps["vacuum analyze"] = time.monotonic() - began
    await conn.execute("CHECKPOINT")  # the load's WAL recycled now, not kept until later
    out.write(f"    vacuum analyze: {steps['vacuum analyze']:.1f}s\n")
    seconds = time.monotonic() - started
    identities = await _identities(conn, plan)
    await conn.execute(
        "INSERT INTO bench_scale.manifest (size, plan, identities, steps, seconds, revision) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        size,
        json.dumps(_described(plan)),
        json.dumps(identities),
        json.dumps(list(steps.items())),  # a jsonb object would not keep the order
        seconds,
        revision,
    )
    manifest = Manifest(size, _described(plan), identities, steps, seconds, revision)
    manifest.counts = await counts(conn)
    out.write(f"  loaded {size} in {seconds:.1f}s: {_counts_text(manifest.counts)}\n")
    return manifest


def _described(plan: ScalePlan) -> dict[str, object]:
    return {**plan.as_dict(), "loader": LOADER_VERSION}


def _counts_text(rows: dict[str, int]) -> str:
    return ", ".join(f"{table} {count:,}" for table, count in rows.items())


def load_sync(url: str, size: str, plan: ScalePlan, *, reload: bool = False) -> Manifest:
    return asyncio.run(ensure_loaded(url, size, plan, reload=reload))
