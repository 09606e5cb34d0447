"""app/services/viewer_view.py: a public body turned into one reader's, byte-exactly."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.services import viewer_view

# Every string field spells the flags' JSON, escaped as orjson escapes it.
TRICKY = '"favorited":false,"following":false} \\"favorited\\":false'


def _article(slug: str) -> dict[str, Any]:
    return {
        "slug": slug,
        "title": TRICKY,
        "description": TRICKY,
        "body": TRICKY,
        "tagList": [TRICKY],
        "favorited": False,
        "favoritesCount": 3,
        "author": {"username": TRICKY, "bio": TRICKY, "image": None, "following": False},
    }


@pytest.mark.parametrize("favorited", [False, True])
@pytest.mark.parametrize("following", [False, True])
def test_article_body_changes_only_the_flags(favorited: bool, following: bool) -> None:
    public = orjson.dumps({"article": _article("a")})
    assert TRICKY.encode() not in public  # the quotes inside strings are escaped
    mine = orjson.loads(viewer_view.article_body(public, favorited, following))
    expected = _article("a")
    expected["favorited"] = favorited
    expected["author"]["following"] = following
    assert mine == {"article": expected}


def test_page_body_sets_each_articles_flags_from_its_own_slug() -> None:
    page = {"articles": [_article("a"), _article("b"), _article("c")], "articlesCount": 3}
    public = orjson.dumps(page)
    parsed = orjson.loads(public)
    flags = {"a": (True, False), "b": (False, True)}  # "c" is gone from Postgres
    mine = orjson.loads(viewer_view.page_body(public, parsed, flags))
    got = [(a["favorited"], a["author"]["following"]) for a in mine["articles"]]
    assert got == [(True, False), (False, True), (False, False)]
    assert mine["articlesCount"] == 3
    assert [a["title"] for a in mine["articles"]] == [TRICKY] * 3


def test_page_body_without_a_true_flag_is_the_public_bytes() -> None:
    public = orjson.dumps({"articles": [_article("a")], "articlesCount": 1})
    parsed = orjson.loads(public)
    assert viewer_view.page_body(public, parsed, {"a": (False, False)}) is public


def test_public_article_clears_a_readers_flags() -> None:
    article = _article("a")
    article["favorited"] = True
    article["author"]["following"] = True
    cleared = viewer_view.public_article(article)
    assert (cleared["favorited"], cleared["author"]["following"]) == (False, False)
