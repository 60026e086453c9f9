"""The cast of the circle-rig tests (issue 15): the owner's friend, a circle of the two, and a rig shared with it."""

import pytest

from tests import factories
from tests.circle_rigs.cast import circle_rig, join, make_circle


@pytest.fixture
def friend(db):
    return factories.make_contributor(handle="friend")


@pytest.fixture
def circle(owner, friend):
    """The owner's circle "flatmates", with the friend in it."""
    circle = make_circle(owner)
    join(circle, friend)
    return circle


@pytest.fixture
def rig(api, owner, circle):
    """A circle rig shared with `circle`, reported in and alive."""
    return circle_rig(api, owner, [circle], gpu="Friends-only GPU", model_name="Hidden-Model-7B")[0]
