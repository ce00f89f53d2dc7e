"""Fixtures for the moderation tests: moderators (staff in the `moderators` group, as
`create_moderator` makes them) and uploaded media."""
import pytest

from media_app import ratelimit
from media_app.moderation.services import moderator_create


@pytest.fixture(autouse=True)
def _fresh_report_counts():
    ratelimit.reset()
    yield
    ratelimit.reset()


@pytest.fixture
def make_moderator(db):
    def make(username):
        return moderator_create(username=username, password=f"pw-{username}-Long-enough-1")

    return make


@pytest.fixture
def mod1(make_moderator):
    return make_moderator("mod1")


@pytest.fixture
def mod2(make_moderator):
    return make_moderator("mod2")
