"""``lock_row``: the database serialises writers that decide from what they read."""

from __future__ import annotations

import threading
import time
import uuid

from registry.db import lock_row
from registry.models import AIModel
from registry.services import Registry


def test_lock_row_serialises_read_then_write(registry: Registry) -> None:
    sessions = registry.sessions
    with sessions.begin() as s:
        model = AIModel(name="locked", provider="Internal", task_type="ImageGeneration")
        s.add(model)
        s.flush()
        model_id = model.id

    def append(digit: int) -> None:
        with sessions.begin() as s:
            row = lock_row(s, AIModel, model_id)
            assert row is not None
            before = row.description or ""
            time.sleep(0.05)  # without the lock, every writer reads "" and one digit survives
            row.description = before + str(digit)

    threads = [threading.Thread(target=append, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with sessions() as s:
        found = s.get(AIModel, model_id)
        assert found is not None
        assert sorted(found.description or "") == list("012345")


def test_lock_row_of_a_missing_row_is_none(registry: Registry) -> None:
    with registry.sessions.begin() as s:
        assert lock_row(s, AIModel, uuid.uuid4()) is None
