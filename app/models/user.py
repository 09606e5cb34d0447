"""Users and the follow graph."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.models.mixins import Timestamps


class User(Timestamps, Base):
    __tablename__ = "users"
    # The feed's look-up of each followed author, from the index alone where the page is
    # all-visible (the migration "feed from the followed authors").
    __table_args__ = (
        Index(
            "ix_users_feed",
            "id",
            postgresql_include=["articles_count", "latest_article_id"],
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # Stored lower-cased by the service, so the unique index is case-insensitive in effect.
    email: Mapped[str] = mapped_column(String(254), unique=True, nullable=False)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    bio: Mapped[str | None] = mapped_column(Text, nullable=True)
    image: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    # Maintained by triggers in each write's own transaction (see the migration
    # "maintained counts"): list totals read one row instead of counting.
    articles_count: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )  # articles this user wrote
    favorites_count: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )  # articles this user favourited
    # The id of this user's newest article (NULL: none), kept by the same trigger: the feed
    # reads only the followed authors whose newest articles can be on its page.
    latest_article_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Raised by a password or email change: tokens carry the version they were issued at, and
    # older ones stop working (app/core/tokens.py, app/db/token_versions.py).
    token_version: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )


class Follow(Base):
    __tablename__ = "follows"
    __table_args__ = (CheckConstraint("follower_id <> followee_id", name="not_self"),)

    follower_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    # Second key column: "who follows X" needs its own index (see the migration).
    followee_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.statement_timestamp(), nullable=False
    )
