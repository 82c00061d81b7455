"""The change feed as a reader follows it (GET /v1/admin/changes?since=...): from the last entry's version
while `has_more`, then from the page's `version`. Whatever the page size and whatever commits meanwhile,
the reader sees every change once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .inprocess import Harness

pytestmark = pytest.mark.anyio


@pytest.fixture
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    harness = Harness(tmp_path_factory.mktemp("change-feed"))
    yield harness
    harness.stop()


async def follow(harness: Harness, admin: str, since: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Every change after `since`, page by page; and the version to follow from next time."""
    seen: list[dict[str, Any]] = []
    while True:
        page = (await harness.request("GET", f"/v1/admin/changes?since={since}&limit={limit}", admin)).json()
        seen += page["data"]
        if not page["has_more"]:
            return seen, page["version"]
        since = page["data"][-1]["version"]


def entries(changes: list[dict[str, Any]]) -> list[tuple[int, str, str, str]]:
    return [(c["version"], c["entity"], c["id"], c["op"]) for c in changes]


@pytest.mark.parametrize(("limit", "first_page"), [(1, 9), (2, 9), (5, 9), (9, 9), (10, 10), (12, 10), (14, 14),
                                                   (1000, 15)])
async def test_a_page_never_ends_inside_a_version(harness: Harness, limit: int, first_page: int) -> None:
    # Versions 1 to 4: the seed (9 entries), the admin key, a catalog file (4) and one model. A page that
    # ended inside the seed or the file left its rest behind for good (the next starts after that version).
    admin = harness.key("admin", "admin")
    harness.catalog.apply({"models": [{"id": f"file/{n}"} for n in range(4)]})
    harness.catalog.create("model", {"id": "alone"})
    whole = entries([c.document() for c in harness.store.changes(0, 1000)])
    assert len(whole) == 9 + 1 + 4 + 1

    seen, version = await follow(harness, admin, 0, limit)
    assert entries(seen) == whole
    assert version == harness.store.current_version()
    page = (await harness.request("GET", f"/v1/admin/changes?since=0&limit={limit}", admin)).json()
    # Whole versions: up to `limit` entries, or the first version whole when it alone has more.
    assert len(page["data"]) == first_page and page["has_more"] == (first_page < 15)


async def test_a_change_committed_while_a_page_is_read_is_not_skipped(harness: Harness) -> None:
    admin = harness.key("admin", "admin")
    since = harness.store.current_version()
    read = harness.store.changes
    written = []

    def changes_then_a_write_elsewhere(after: int, limit: int) -> Any:
        found = read(after, limit)
        if not written:  # another process commits between the page's read and its `version`
            written.append(harness.catalog.create("model", {"id": "meanwhile"}))
        return found

    harness.store.changes = changes_then_a_write_elsewhere  # type: ignore[method-assign]
    seen, version = await follow(harness, admin, since, 100)
    assert seen == [] and written
    # The page's version was the one it was read at: following from it finds the change (it answered
    # the version after it, and the reader never saw "meanwhile").
    seen, version = await follow(harness, admin, version, 100)
    assert entries(seen) == [(since + 1, "model", "meanwhile", "create")]
