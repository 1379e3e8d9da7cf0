"""What every source family shares: field checks that name the row, and the example record."""

from __future__ import annotations

from safealign.data.files import Rows
from safealign.errors import DataError


def require(rows: Rows, i: int, fields: tuple[str, ...]) -> dict:
    row = rows.rows[i]
    for name in fields:
        if name not in row or row[name] is None:
            raise DataError(f"{rows.where(i)}: missing field '{name}'")
    return row


def example(instruction: str, output: str, input: str = "", **meta) -> dict:
    return {"instruction": instruction, "input": input, "output": output, "meta": meta}
