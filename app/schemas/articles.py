"""Article request and response envelopes (camelCase on the wire)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from app.schemas.common import CamelModel, NonBlankStr, Timestamp
from app.schemas.profiles import Profile

MAX_TAGS = 10
Title = Annotated[NonBlankStr, StringConstraints(max_length=200)]
Description = Annotated[NonBlankStr, StringConstraints(max_length=1000)]
Body = Annotated[NonBlankStr, StringConstraints(max_length=100_000)]
TagName = Annotated[NonBlankStr, StringConstraints(strip_whitespace=True, max_length=64)]


class NewArticle(CamelModel):
    title: Title
    description: Description
    body: Body
    tag_list: Annotated[list[TagName], Field(max_length=MAX_TAGS)] = []


class NewArticleRequest(BaseModel):
    article: NewArticle


class UpdateArticle(CamelModel):
    title: Title | None = None
    description: Description | None = None
    body: Body | None = None
    tag_list: Annotated[list[TagName], Field(max_length=MAX_TAGS)] | None = None


class UpdateArticleRequest(BaseModel):
    article: UpdateArticle


class ArticleSummary(CamelModel):
    """An article in a list: everything but the body (RealWorld since 2024-08)."""

    slug: str
    title: str
    description: str
    tag_list: list[str]
    created_at: Timestamp
    updated_at: Timestamp
    favorited: bool
    favorites_count: int
    author: Profile


class Article(ArticleSummary):
    body: str


class ArticleResponse(BaseModel):
    article: Article


class ArticleListResponse(CamelModel):
    articles: list[ArticleSummary]
    articles_count: int
