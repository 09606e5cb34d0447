"""A signed-in reader's view of a public body: the same JSON, with their own `favorited` and
`following`.

Everything in an article but those two flags is the same for every reader, so a signed-in
read starts from the body cached for anonymous readers and asks Postgres only for the flags
(`app.repositories.articles.viewer_flags`, two primary-key look-ups per article) instead of
the whole view with its author, tags and counts.

Public bodies always carry both flags as false. orjson writes them compactly, and inside a
JSON string a quote is always escaped, so the bytes `"favorited":false` and
`"following":false` occur only as those keys: an article has one of each (its own, its
author's), which a single article's body turns true by replacing bytes, without parsing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

Flags = Mapping[str, tuple[bool, bool]]  # slug -> (favorited, following)

_FAVORITED = (b'"favorited":false', b'"favorited":true')
_FOLLOWING = (b'"following":false', b'"following":true')


def article_body(public: bytes, favorited: bool, following: bool) -> bytes:
    """`{"article": ...}` as the viewer sees it."""
    if favorited:
        public = public.replace(*_FAVORITED, 1)
    if following:
        public = public.replace(*_FOLLOWING, 1)
    return public


def page_body(public: bytes, page: dict[str, Any], flags: Flags) -> bytes:
    """`{"articles": [...], "articlesCount": n}` as the viewer sees it; `page` is `public`
    parsed (and is changed). Unchanged bytes when no flag of the page is true."""
    if not any(favorited or following for favorited, following in flags.values()):
        return public
    for article in page["articles"]:
        favorited, following = flags.get(article["slug"], (False, False))
        article["favorited"] = favorited
        article["author"]["following"] = following
    return orjson.dumps(page)


def public_article(article: dict[str, Any]) -> dict[str, Any]:
    """One rendered article (a dict, camelCase) with the viewer's flags cleared, in place."""
    article["favorited"] = False
    article["author"]["following"] = False
    return article
