"""New rows written by Core, then held by the session as rows it loaded.

A mail that opens a ticket writes a ticket, its participants, an article and its
attachments. The ORM's unit of work costs more than these statements themselves (it is
the larger part of a new ticket's write): here each class's rows are one INSERT..RETURNING
their ids, and the objects join the session as persistent, every column known, so what
reads them next in the transaction (the notifier, a reply in the same batch) finds
them in the identity map without a query. Their relationships are set by the caller
(`set_committed_value`) before `hold`; later changes to them flush as UPDATEs as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Insert, Table, insert
from sqlalchemy.orm import Mapper, Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from tickets.models import Base


def insert_rows(session: Session, objects: Sequence[Base]) -> None:
    """INSERT these new objects (all of one class, no relationship set) in one statement;
    their ids and every column value are set on them as loaded."""
    if not objects:
        return
    mapper: Mapper[Any] = type(objects[0]).__mapper__
    statement, columns = _insert_of(mapper)
    rows = [
        {column: _value(obj, key, column, mapper) for key, column in columns} for obj in objects
    ]
    ids = session.connection().execute(statement, rows).scalars().all()
    for obj, row, row_id in zip(objects, rows, ids, strict=True):
        for key, column in columns:
            set_committed_value(obj, key, row[column])
        set_committed_value(obj, "id", row_id)


def hold(session: Session, objects: Sequence[Base]) -> None:
    """Objects `insert_rows` wrote join the session as persistent (no INSERT again)."""
    for obj in objects:
        make_transient_to_detached(obj)
    for obj in objects:
        session.add(obj)


@lru_cache(maxsize=16)
def _insert_of(mapper: Mapper[Any]) -> tuple[Insert, tuple[tuple[str, str], ...]]:
    """The INSERT..RETURNING id of the mapper's table (ids in the rows' order) and its
    (attribute, column) pairs, built once per class."""
    table = mapper.local_table
    assert isinstance(table, Table)
    columns = tuple(
        (prop.key, prop.columns[0].key) for prop in mapper.column_attrs if prop.key != "id"
    )
    return insert(table).returning(table.c.id, sort_by_parameter_order=True), columns


def _value(obj: Base, key: str, column: str, mapper: Mapper[Any]) -> Any:
    """The object's value, else the column's Python default (as a flush would write)."""
    if key in obj.__dict__:
        return obj.__dict__[key]
    default = mapper.local_table.c[column].default
    if default is None:
        return None
    if default.is_callable:
        return default.arg(None)
    return default.arg
