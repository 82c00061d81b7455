"""The served catalog's views are bounded: policies no key has (callers whose policy comes from elsewhere)
are cached for the most recently used few only, while every key's own view stays."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from modeldex.api import render
from modeldex.api.render import RenderedCatalog
from modeldex.catalog.policy import AccessPolicy
from modeldex.catalog.seed import seed_models
from modeldex.catalog.service import Catalog
from modeldex.store import open_store

KEY_POLICY = AccessPolicy(patterns=("MiniMax-M2*",))


@pytest.fixture
def rendered(tmp_path: Path) -> RenderedCatalog:
    store = open_store(f"sqlite:///{tmp_path}/catalog.db", seed=seed_models())
    try:
        Catalog(store).create_key("narrow", "read", KEY_POLICY)
        return RenderedCatalog(store.load_state())
    finally:
        store.close()


def test_views_of_policies_no_key_has_are_bounded(rendered: RenderedCatalog) -> None:
    own = rendered.view(KEY_POLICY)
    others = [AccessPolicy(patterns=(f"m{i}*",)) for i in range(200)]
    assert len(others) > 2 * render.MAX_OTHER_VIEWS
    first_views = []
    for policy in others:
        view = rendered.view(policy)
        first_views.append(view)
        assert orjson.loads(view.list_body) == {"object": "list", "data": []}  # no seed id starts with "m"
        assert len(rendered._other_views) <= render.MAX_OTHER_VIEWS
    assert len(rendered._other_views) == render.MAX_OTHER_VIEWS
    # The most recent are kept (the same object comes back); the oldest were let go and are made anew.
    assert rendered.view(others[-1]) is rendered.view(others[-1])
    assert rendered.view(others[-1]) is first_views[-1]
    assert rendered.view(others[0]) is not first_views[0]
    # The key's own view was never evicted, and it is still right.
    assert rendered.view(KEY_POLICY) is own
    assert {m["id"] for m in orjson.loads(own.list_body)["data"]} == {
        "MiniMax-M2.7", "MiniMax-M2.7-highspeed", "MiniMax-M2.5", "MiniMax-M2.5-highspeed", "MiniMax-M2.1",
        "MiniMax-M2.1-highspeed", "MiniMax-M2"}


def test_a_used_other_view_stays_while_newer_ones_come(rendered: RenderedCatalog) -> None:
    favourite = AccessPolicy(patterns=("MiniMax-M3*",))
    first = rendered.view(favourite)
    for i in range(3 * render.MAX_OTHER_VIEWS):
        rendered.view(AccessPolicy(patterns=(f"x{i}*",)))
        if i % (render.MAX_OTHER_VIEWS // 2) == 0:
            assert rendered.view(favourite) is first  # used again: most recently used, so kept
    assert rendered.view(favourite) is first
    assert set(first.bodies) == {"MiniMax-M3", "MiniMax-M3.1-Flash-Preview"}
