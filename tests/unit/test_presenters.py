"""The JSON rendered straight from rows (lists, articles, comments) is byte for byte what the
schemas' models would dump: clients see one format whichever path served them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from app.schemas.comments import Comment
from app.services import presenters

AUTHORS = [
    {"author_username": "jake", "author_bio": None, "author_image": None, "following": False},
    {
        "author_username": "zoë",
        "author_bio": 'bio with "quotes" and \\ and \u2028',
        "author_image": "https://example.com/a.png",
        "following": True,
    },
]
MOMENTS = [
    datetime(2026, 12, 6, 15, 0, 0, 123456, tzinfo=UTC),
    datetime(2026, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=-5))),
]


class _Row(dict[str, Any]):
    """Read by key (the JSON renderers) and by attribute (the models), as `Record` is."""

    def __getattr__(self, name: str) -> Any:
        return self[name]


def _dump(model: Any) -> bytes:
    return orjson.dumps(model.model_dump(mode="json", by_alias=True))


@pytest.mark.parametrize("author", AUTHORS)
@pytest.mark.parametrize("moment", MOMENTS)
def test_a_comment_renders_as_its_model_dumps(author: dict[str, Any], moment: datetime) -> None:
    row: Any = _Row(id=42, body="Nice </script> 🎉", created_at=moment, updated_at=moment, **author)
    model = Comment(
        id=row.id,
        body=row.body,
        created_at=row.created_at,
        updated_at=row.updated_at,
        author=presenters.author_profile(row),
    )
    assert orjson.dumps(presenters.comment_json(row)) == _dump(model)


@pytest.mark.parametrize("author", AUTHORS)
@pytest.mark.parametrize("moment", MOMENTS)
def test_an_article_renders_as_its_model_dumps(author: dict[str, Any], moment: datetime) -> None:
    row: Any = _Row(
        slug="how-to-train",
        title='Dragons "and" more',
        description="desc",
        body="body\n",
        tag_list=["dragons", "training"],
        created_at=moment,
        updated_at=moment,
        favorited=True,
        favorites_count=3,
        **author,
    )
    assert orjson.dumps(presenters.article_json(row)) == _dump(presenters.article(row))
