"""Fixtures the fault tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pgcluster import PgCluster


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    pg = PgCluster.require()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()
