"""Articles, their tags and favourites.

`favorites_count` is kept on the article (updated in the same transaction as the favourite row)
so list pages read it without counting. The totals of list pages are kept the same way, by
triggers (alembic revision "maintained counts"): per tag (`tags.articles_count`), per author and
per favouriting user (`users.articles_count`, `users.favorites_count`), and overall
(`article_totals`, in slots).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.models.mixins import Timestamps


class Article(Timestamps, Base):
    __tablename__ = "articles"
    __table_args__ = (
        # Newest-first pages by author, read backwards from the author's newest id (the
        # global list reads the primary key backwards).
        Index("ix_articles_author_id_id", "author_id", text("id DESC")),
        # The previous release's orders (created_at): kept while it may still serve during a
        # rollout, dropped by the next release's contract migration (docs/performance.md).
        Index("ix_articles_created_at_id", text("created_at DESC"), text("id DESC")),
        Index("ix_articles_author_id_created_at", "author_id", text("created_at DESC")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    slug: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    title: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    author_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    favorites_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))


class Tag(Base):
    __tablename__ = "tags"
    # The popular-tags list: the first 100 entries of this index, no counting.
    __table_args__ = (Index("ix_tags_articles_count_name", text("articles_count DESC"), "name"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    articles_count: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )


class ArticleTotal(Base):
    """The number of articles, spread over ARTICLE_TOTAL_SLOTS rows (an article counts in slot
    `id % ARTICLE_TOTAL_SLOTS`): concurrent writers rarely wait for one another's row, and the
    total is the sum of a few rows."""

    __tablename__ = "article_totals"

    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    articles: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))


ARTICLE_TOTAL_SLOTS = 16


class ArticleIdBucket(Base):
    """How many articles have an id in [bucket * 512, (bucket + 1) * 512): a deep page of the
    global list walks these from the newest instead of skipping articles one by one
    (`conduit_article_anchor`, alembic revision "article id buckets")."""

    __tablename__ = "article_id_buckets"

    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    articles: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))


class ArticleTag(Base):
    __tablename__ = "article_tags"
    # A tag's articles newest first: its page is the first entries of this index. (The
    # primary key leads with the article: an article's tags.)
    __table_args__ = (
        Index("ix_article_tags_tag_id_article_id", "tag_id", text("article_id DESC")),
    )

    article_id: Mapped[int] = mapped_column(
        ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[int] = mapped_column(
        ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Favorite(Base):
    __tablename__ = "favorites"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    article_id: Mapped[int] = mapped_column(
        ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.statement_timestamp(), nullable=False
    )
