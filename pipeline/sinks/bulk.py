"""Batch inserts through COPY: one statement per table per batch instead of one per row.

``executemany`` runs the INSERT once per row, on the server too: at 1,500 reports/s PostgreSQL
spent about a third of a core parsing, binding and executing them, on a two-core machine the worker
shares. Here the batch is copied into a temporary staging table and moved with one
``INSERT … SELECT … ON CONFLICT``, so a replayed row changes nothing, exactly as before.

``direct=True`` copies straight into the table instead, for rows that cannot conflict (those that
hang off a report the same transaction has just stored): each row is written once, not staged,
deleted and inserted again with a speculative-insertion check per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncCursor, sql


async def copy_insert(
    cur: AsyncCursor,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    on_conflict: str = "ON CONFLICT DO NOTHING",
    direct: bool = False,
) -> int:
    """Insert ``rows`` (values of ``columns``) into ``table``; returns the rows actually inserted.

    Must run inside a transaction; the move empties the staging table (and so would a rollback).
    ``direct``: the caller knows no row conflicts; a conflict raises ``UniqueViolation``.
    """
    if not rows:
        return 0
    if direct:
        await copy_rows(cur, table, columns, rows)
        return len(rows)
    await _stage_and_move(cur, table, columns, rows, on_conflict, ())
    return max(cur.rowcount, 0)


async def copy_rows(
    cur: AsyncCursor, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """COPY ``rows`` straight into ``table`` (no conflict handling)."""
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    statement = sql.SQL("COPY {target} ({cols}) FROM STDIN")
    async with cur.copy(statement.format(target=sql.Identifier(*table.split(".")), cols=cols)) as copy:
        for row in rows:
            await copy.write_row(row)


async def copy_insert_returning(
    cur: AsyncCursor,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    returning: Sequence[str],
    on_conflict: str = "ON CONFLICT DO NOTHING",
) -> list[tuple[Any, ...]]:
    """As :func:`copy_insert`, but returns the ``returning`` columns of the rows actually inserted
    (none of a replayed row: what follows from an insert can then follow once, and only once)."""
    if not rows:
        return []
    await _stage_and_move(cur, table, columns, rows, on_conflict, returning)
    return [tuple(r) for r in await cur.fetchall()]


async def _stage_and_move(
    cur: AsyncCursor,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    on_conflict: str,
    returning: Sequence[str],
) -> None:
    schema, _, name = table.rpartition(".")
    stage = sql.Identifier(f"_stage_{schema}_{name}" if schema else f"_stage_{name}")
    target = sql.Identifier(*table.split("."))
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    # Column types only: no defaults (a sequence would be consumed), no constraints.
    await cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS "
            "AS SELECT {cols} FROM {target} WITH NO DATA"
        ).format(stage=stage, cols=cols, target=target)
    )
    async with cur.copy(sql.SQL("COPY {stage} ({cols}) FROM STDIN").format(stage=stage, cols=cols)) as copy:
        for row in rows:
            await copy.write_row(row)
    back = (
        sql.SQL(" RETURNING ") + sql.SQL(", ").join(map(sql.Identifier, returning))
        if returning
        else sql.SQL("")
    )
    await cur.execute(
        sql.SQL(
            "WITH moved AS (DELETE FROM {stage} RETURNING {cols}) "
            "INSERT INTO {target} ({cols}) SELECT {cols} FROM moved {conflict}{back}"
        ).format(
            target=target,
            cols=cols,
            stage=stage,
            conflict=sql.SQL(on_conflict),  # a constant of the caller, never data
            back=back,
        )
    )
