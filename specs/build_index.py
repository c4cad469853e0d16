"""Rebuild specs/index.json, what `resdsl list` prints, by compiling every shipped spec.

Run after changing a shipped spec or what the compiler reports for one:
``python specs/build_index.py``. tests/test_daily.py fails while the index is stale;
resdsl then still works, but `resdsl list` compiles every spec (a few seconds).
"""

from __future__ import annotations

from resdsl.list_cli import index_path, write_index

if __name__ == "__main__":
    write_index()
    print(f"wrote {index_path()}")
