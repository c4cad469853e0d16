"""CPU seconds of `check` and `draw` for the specs at and past each size bound: `python bench/limits.py`.

docs/language.md ("Limits") expects a spec within the bounds to compile, check and
draw in about 2 s of CPU on one core. The tests hold the work to counted bounds
(tests/fuzz_harness.py) and assert no time; this measures the time, one row a case of
tests/fuzz_harness.py's ``at_the_bounds``, in this process with warm imports, and
`resdsl list --json` as a fresh process. CPU time, so that other work on the machine
counts less; a busy machine still reads higher.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import fuzz_harness  # noqa: E402

from resdsl import cli  # noqa: E402


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_case(text: str) -> float:
    """CPU seconds of `resdsl check` and `resdsl draw` (every detail) on one spec, in process."""
    with tempfile.TemporaryDirectory(prefix="resdsl-bench-") as directory:
        path = Path(directory) / "case.res"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        start = time.process_time()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = cli.main(["check", "--stages", str(path)])
            if code == 0:
                for detail in ("layer", "block", "stage"):
                    cli.main(["draw", str(path), "-o", str(Path(directory) / f"{detail}.dot"), "--detail", detail])
        return time.process_time() - start


def measure_list() -> float:
    """CPU seconds of `resdsl list --json` in a fresh process, imports included."""
    before = _children_cpu()
    subprocess.run(
        [sys.executable, "-m", "resdsl", "list", "--json"],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return _children_cpu() - before


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="measure only the cases whose name contains this")
    args = parser.parse_args(argv)
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    fuzz_harness.warm_up()
    print("| case | CPU seconds |")
    print("| --- | ---: |")
    for name, text in sorted(fuzz_harness.at_the_bounds().items()):
        if args.only and args.only not in name:
            continue
        print(f"| {name} | {measure_case(text):.2f} |", flush=True)
    if not args.only or args.only in "list":
        print(f"| `resdsl list --json`, a fresh process | {measure_list():.2f} |")


if __name__ == "__main__":
    main()
