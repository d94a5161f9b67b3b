"""Tags on models and versions: checking keys and values, reading them for a page of owners in
one query, and the upsert that the database settles.

A tag labels; it is not part of what a version serves. So a tag changes on any status (an
Archived or Production version too) and never touches the version's row, its digest or the
validation bound to it. The tables are ``model_tags`` and ``version_tags`` (registry/models.py).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from registry.errors import Invalid
from registry.models import TAG_KEY_MAX, TAG_VALUE_MAX
from registry.types import utcnow

TAG_KEY_PATTERN = re.compile(rf"[A-Za-z0-9._/-]{{1,{TAG_KEY_MAX}}}")
KEY_RULE = f"a tag key is 1 to {TAG_KEY_MAX} characters of letters, digits, '.', '_', '-' or '/'"


def check_key(key: str) -> str:
    if not TAG_KEY_PATTERN.fullmatch(key):
        raise Invalid(f"{KEY_RULE}; {key[:80]!r} is not", key=key[:80])
    return key


def check_value(value: str) -> str:
    if len(value) > TAG_VALUE_MAX:
        raise Invalid(
            f"a tag value is at most {TAG_VALUE_MAX} characters; this one has {len(value)}",
            limit=TAG_VALUE_MAX,
        )
    return value


def owner_column(table: Table) -> str:
    """``model_id`` or ``model_version_id``: the tag table's second column."""
    return str(list(table.c)[1].name)


def load_tags(
    s: Session, table: Table, owners: Iterable[uuid.UUID]
) -> dict[uuid.UUID, dict[str, str]]:
    """The tags of every owner in ``owners``, in one query (a page of models or versions)."""
    ids = list(owners)
    found: dict[uuid.UUID, dict[str, str]] = {i: {} for i in ids}
    if not ids:
        return found
    owner = table.c[owner_column(table)]
    rows = s.execute(
        select(owner, table.c.key, table.c.value).where(owner.in_(ids)).order_by(table.c.key)
    )
    for owner_id, key, value in rows:
        found[owner_id][key] = value
    return found


def upsert_tag(s: Session, table: Table, owner_id: uuid.UUID, key: str, value: str) -> bool:
    """Set the tag; True if that changed anything. ``INSERT … ON CONFLICT (owner, key) DO
    UPDATE … WHERE value differs``: two concurrent writers never both insert, and nothing is
    read first. A row comes back only when one was inserted or its value changed."""
    owner = owner_column(table)
    dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(
        {
            owner: owner_id,
            "key": check_key(key),
            "value": check_value(value),
            "updated_at": utcnow(),
        }
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c[owner], table.c.key],
        set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
        where=table.c.value != stmt.excluded.value,
    ).returning(table.c.id)
    return s.execute(stmt).first() is not None


def delete_tag(s: Session, table: Table, owner_id: uuid.UUID, key: str) -> str | None:
    """Remove the tag; its value, or None if there was none."""
    owner = table.c[owner_column(table)]
    row = s.execute(
        delete(table)
        .where(owner == owner_id, table.c.key == check_key(key))
        .returning(table.c.value)
    ).first()
    return None if row is None else str(row[0])
