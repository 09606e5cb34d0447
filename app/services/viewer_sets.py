"""A signed-in reader's own cache entries: their favourites and follows, cached whole, so that
their flags on a cached article or page cost no Postgres statement at all; and their feed pages.

One entry per reader: the slugs they favourited and the usernames they follow, read in one
statement (`app.repositories.users.viewer_sets`) when missing and kept under two tags:

- the list generation (`app.services.articles.LIST_GENERATION_KEY`), which every favourite,
  article edit or deletion, and profile change already drops after its commit: a renamed slug,
  a renamed author or a removed favourite never outlives its write;
- the reader's own generation, `conduit:v1:viewer:<id>`, dropped after their own follow or
  unfollow, which no public entry depends on.

An entry whose tags are not the current ones is a miss. The tags are read before Postgres is,
so an entry filled from a read that raced a write carries the tags that write dropped and is
never used: a reader sees their own writes on their next request, whichever app replica serves
it. A reader with more than MAX_ENTRIES favourites or follows gets no entry (the per-request
flags statement serves them). Without Redis there are no tags, and no entry.

A feed page (`feed_key`) is kept under the same two tags: new articles, edits, deletions,
favourites and profile changes drop the list generation, and the reader's follows their own.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.cache import Cache, cache_key, invalidate_after_commit
from app.repositories import users as users_repo
from app.repositories.driver import ReadSource

MAX_ENTRIES = 1000
_TOO_MANY = b"-"


def viewer_generation_key(user_id: int) -> str:
    return cache_key("viewer", str(user_id))


def viewer_set_key(user_id: int) -> str:
    return cache_key("viewer-set", str(user_id))


@dataclass(frozen=True, slots=True)
class ViewerSet:
    favorited: frozenset[str]  # slugs
    following: frozenset[str]  # usernames

    def flags(self, slug: str, author: str) -> tuple[bool, bool]:
        return slug in self.favorited, author in self.following


def feed_key(user_id: int, limit: int, offset: int) -> str:
    return cache_key("feed", str(user_id), f"{limit}:{offset}")


def tagged(tags: tuple[bytes, bytes], payload: bytes) -> bytes:
    """A personal entry as stored: the generations it was read under, then its payload."""
    return tags[0] + b"|" + tags[1] + b"|" + payload


def untagged(value: bytes, tags: tuple[bytes, bytes]) -> bytes | None:
    """The payload of a stored personal entry when it was read under `tags`, else None."""
    prefix = tags[0] + b"|" + tags[1] + b"|"
    return value[len(prefix) :] if value.startswith(prefix) else None


async def personal_tags(
    cache: Cache, viewer_id: int, list_generation: bytes | None
) -> tuple[bytes, bytes] | None:
    """(list generation, the reader's generation): what a personal entry is valid under; None
    without Redis."""
    if list_generation is None:
        return None
    mine = await cache.generation(viewer_generation_key(viewer_id), name="viewer_generation")
    return None if mine is None else (list_generation, mine)


async def viewer_set(
    cache: Cache,
    open_reads: Callable[[], AbstractAsyncContextManager[ReadSource]],
    viewer_id: int,
    list_generation: bytes | None,
) -> ViewerSet | None:
    """The reader's favourites and follows, from the cache or read and cached; None when they
    cannot be cached (no Redis, or more than MAX_ENTRIES of either)."""
    tags = await personal_tags(cache, viewer_id, list_generation)
    if tags is None:
        return None
    key = viewer_set_key(viewer_id)
    stored = await cache.get_raw(key, name="viewer_set")
    payload = untagged(stored, tags) if stored is not None else None
    if payload is None:
        async with open_reads() as source:
            favorited, following = await users_repo.viewer_sets(
                source, viewer_id, limit=MAX_ENTRIES + 1
            )
        too_many = len(favorited) > MAX_ENTRIES or len(following) > MAX_ENTRIES
        payload = _TOO_MANY if too_many else orjson.dumps([favorited, following])
        await cache.set_raw(key, tagged(tags, payload))
    if payload == _TOO_MANY:
        return None
    favorited, following = orjson.loads(payload)
    return ViewerSet(frozenset(favorited), frozenset(following))


def forget_viewer_after_commit(session: AsyncSession, cache: Cache, viewer_id: int) -> None:
    """After the reader's own follow or unfollow: their cached set is stale."""
    invalidate_after_commit(session, cache, viewer_generation_key(viewer_id))
