"""ORM models; importing this package registers every table on Base.metadata."""

from app.models.article import (
    Article,
    ArticleIdBucket,
    ArticleTag,
    ArticleTotal,
    Favorite,
    Tag,
)
from app.models.comment import Comment
from app.models.user import Follow, User

__all__ = [
    "Article",
    "ArticleIdBucket",
    "ArticleTag",
    "ArticleTotal",
    "Comment",
    "Favorite",
    "Follow",
    "Tag",
    "User",
]
