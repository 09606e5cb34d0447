"""Rows and models into RealWorld response schemas (one place for the wire shapes)."""

from __future__ import annotations

from typing import Any

from app.models import User as UserModel
from app.repositories.driver import Record
from app.schemas.articles import Article
from app.schemas.common import format_timestamp
from app.schemas.profiles import Profile
from app.schemas.users import User


def author_profile(row: Record) -> Profile:
    return Profile(
        username=row.author_username,
        bio=row.author_bio,
        image=row.author_image,
        following=bool(row.following),
    )


def _article_fields(row: Record) -> dict[str, Any]:
    return {
        "slug": row.slug,
        "title": row.title,
        "description": row.description,
        "tag_list": list(row.tag_list),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "favorited": bool(row.favorited),
        "favorites_count": row.favorites_count,
        "author": author_profile(row),
    }


def author_json(row: Record) -> dict[str, Any]:
    """`author_profile(row)` as its JSON object, from the `author_*` and `following` columns."""
    return {
        "username": row["author_username"],
        "bio": row["author_bio"],
        "image": row["author_image"],
        "following": bool(row["following"]),
    }


def summary_json(row: Record) -> dict[str, Any]:
    """An `ArticleSummary` as its JSON object (camelCase, the same keys in the same order),
    built directly: a list page renders 20 of these, and building the models only to dump them
    again was most of a signed-in page's CPU. Columns are read by key, in C: `Record`'s
    attribute access is a Python call each, and cost 1,000 comments 6 ms of 9."""
    return {
        "slug": row["slug"],
        "title": row["title"],
        "description": row["description"],
        "tagList": list(row["tag_list"]),
        "createdAt": format_timestamp(row["created_at"]),
        "updatedAt": format_timestamp(row["updated_at"]),
        "favorited": bool(row["favorited"]),
        "favoritesCount": row["favorites_count"],
        "author": author_json(row),
    }


def article_json(row: Record) -> dict[str, Any]:
    """`article(row)` as its JSON object: the summary's keys, then the body."""
    rendered = summary_json(row)
    rendered["body"] = row["body"]
    return rendered


def article(row: Record) -> Article:
    return Article(**_article_fields(row), body=row.body)


def comment_json(row: Record) -> dict[str, Any]:
    """A `Comment` as its JSON object (the same keys in the same order), built directly: an
    article's comments are all returned at once (the contract has no pages), and building a
    model and a profile for each of 1,000 only to dump them again cost more than Postgres."""
    return {
        "id": row["id"],
        "createdAt": format_timestamp(row["created_at"]),
        "updatedAt": format_timestamp(row["updated_at"]),
        "body": row["body"],
        "author": author_json(row),
    }


def own_profile(model: UserModel) -> Profile:
    """The caller's own profile: nobody follows themselves."""
    return Profile(username=model.username, bio=model.bio, image=model.image, following=False)


def user(model: UserModel, token: str) -> User:
    return User(
        email=model.email, token=token, username=model.username, bio=model.bio, image=model.image
    )
