"""Rebuild grammar/resdsl.tables.json from grammar/resdsl.lark.

Run after every change to the grammar: ``python grammar/build_tables.py``.
tests/test_parse_tables.py fails while the shipped tables are stale; resdsl then
still works, but builds the tables at every start (0.04-0.2 s).
"""

from __future__ import annotations

from resdsl.parser import tables_path, write_tables

if __name__ == "__main__":
    write_tables()
    print(f"wrote {tables_path()}")
