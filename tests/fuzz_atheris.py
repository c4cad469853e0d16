"""Coverage-guided fuzzing of the parser and compiler with atheris (libFuzzer for Python).

Each input is spec bytes; the target compiles them and, where they compile, draws them
at every detail (what ``resdsl check`` and ``resdsl draw`` do; torch is left to
tests/test_fuzz_hostile.py, whose cases are slower). Anything but a network or a
SpecError is a crash; libFuzzer's ``-rss_limit_mb`` makes memory a crash too, and
its ``-timeout``, set far above any honest input, catches hangs. The corpus starts
from docs/language.md's examples, the shipped specs and tests/fixtures/fuzz_regressions/.

A bounded run is part of the tests (tests/test_fuzz_hostile.py); a longer one, and what
to do with a finding, are in docs/errors.md ("Fuzzing")::

    python tests/fuzz_atheris.py -max_total_time=3600 -timeout=120 fuzz-corpus/

Memory is bounded inside the target (500 MB of address space over what it starts
with, a MemoryError beyond); libFuzzer's own ``-rss_limit_mb`` also works from a shell.
"""

from __future__ import annotations

import os
import re
import resource
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent

with atheris.instrument_imports(include=["resdsl", "lark"]):
    import resdsl
    from resdsl.backends.draw import DETAILS, to_dot
    from resdsl.errors import SpecError
    from resdsl.ir import Limits

#: Where `use` paths in fuzzed text resolve: a scratch folder holding copies of the seeds.
WORKDIR = Path(tempfile.mkdtemp(prefix="resdsl-atheris-"))


def seeds() -> list[bytes]:
    language = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    found = [text.encode() for text in re.findall(r"```\n(.*?)```", language, flags=re.S)]
    for folder in (ROOT / "specs", ROOT / "tests" / "fixtures" / "fuzz_regressions"):
        found += [path.read_bytes() for path in sorted(folder.rglob("*.res"))]
    return found


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        network = resdsl.compile_text(text, path=str(WORKDIR / "fuzz.res"), limits=Limits())
    except SpecError as error:
        message = str(error)  # rendering the diagnostic must not crash either
        if "Traceback" in message:
            raise AssertionError(message) from None
        return
    for detail in DETAILS:
        to_dot([network], detail=detail, shapes=True, all_layers=True).source  # noqa: B018


#: New memory one input may take (tests/fuzz_harness.py's MEMORY_BYTES).
MEMORY_BYTES = 500 * 1024 * 1024


def _virtual_size() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    # Corpus folders become absolute: the fuzzing runs from the scratch folder.
    arguments = [arg if arg.startswith("-") else os.path.abspath(arg) for arg in sys.argv]
    corpus = next((arg for arg in arguments[1:] if not arg.startswith("-")), None)
    if corpus is not None:
        os.makedirs(corpus, exist_ok=True)
        for index, seed in enumerate(seeds()):
            path = Path(corpus, f"seed-{index:03d}.res")
            if not path.exists():
                path.write_bytes(seed)
    os.chdir(WORKDIR)
    # The memory budget as an address-space limit (a MemoryError is a finding):
    # libFuzzer's -rss_limit_mb reads ru_maxrss, which a process started from a large
    # one (pytest, with torch loaded) inherits across exec.
    limit = _virtual_size() + MEMORY_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    atheris.Setup(arguments, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
