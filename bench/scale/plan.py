"""What each size holds: counts, and the special cases the workloads need.

Counts scale with the number of articles (1M: 100k users, 1,000 tags, 10M favourites, 1M
follows, 5M comments). The special cases the issue names by an absolute figure keep it at every
size (one reader follows 1,000 authors, one article holds 1,000 comments, 5 articles carry the
rare tag, a few authors are followed by every regular user), so a small and a large set ask
Postgres the same questions and differ only by how much data sits around the answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Fixed ids of the special users; regular users are every id from FIRST_REGULAR_ID on.
READER_ID = 1  # follows `reader_follows` regular authors: the feed workload signs in as them
FAN_ID = 2  # favourites one article in `fan_every`: the by-favorited workload
PROLIFIC_ID = 3  # writes one article in `prolific_every`: the by-author workload
FIRST_STAR_ID = 4  # the stars: followed by every regular user

RARE_TAG = "rare"
EPOCH = "2023-12-01 00:00:00+00"  # created_at runs from here over `span_days`, growing with id


@dataclass(frozen=True)
class ScalePlan:
    articles: int
    users: int
    tags: int
    favorites_per_article: float = 10.0  # mean; exponential spread, a few articles get many
    comments_per_article: float = 5.0
    follows_per_user: int = 7  # besides the stars, whom every regular user follows
    stars: int = 3
    reader_follows: int = 1_000
    hot_comments: int = 1_000  # the one article holding them
    rare_articles: int = 5
    fan_every: int = 100
    prolific_every: int = 100
    span_days: int = 3 * 365
    seed: int = 20261206

    @property
    def first_regular_id(self) -> int:
        return FIRST_STAR_ID + self.stars

    @property
    def regular_users(self) -> int:
        return self.users - self.first_regular_id + 1

    @property
    def hot_article_id(self) -> int:
        return self.articles // 2 + 1

    def rare_article_ids(self) -> list[int]:
        step = self.articles / (self.rare_articles + 1)
        return [int(step * k) + 1 for k in range(1, self.rare_articles + 1)]

    def check(self) -> None:
        if self.regular_users < max(self.reader_follows, self.follows_per_user) + 1:
            raise ValueError(f"{self.users} users cannot give the reader {self.reader_follows}")
        if self.articles < self.rare_articles + 2 or self.tags < 2:
            raise ValueError("too few articles or tags for the special cases")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _plan(articles: int) -> ScalePlan:
    # The prolific author and the fan get one article in 100, but at least 40 (two full pages),
    # so that their pages hold 20 articles at every size.
    every = min(100, articles // 40)
    return ScalePlan(
        articles=articles,
        users=max(articles // 10, 2_000),
        tags=min(max(articles // 1_000, 30), 1_000),
        fan_every=every,
        prolific_every=every,
    )


SIZES: dict[str, ScalePlan] = {
    "500": _plan(500),
    "10k": _plan(10_000),
    "100k": _plan(100_000),
    "1m": _plan(1_000_000),
}
SMALL = "500"
