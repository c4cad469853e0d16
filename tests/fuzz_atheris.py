"""Coverage-guided fuzzing of the parser and compiler with atheris (libFuzzer for Python).

Each input is spec bytes; the target compiles them and, where they compile, draws them
at every detail (what ``resdsl check`` and ``resdsl draw`` do) and folds their parallel
paths as ``for_inference`` does (the IR rewrite, linted). Every input also goes through
``fmt``, which must never say the formatted file would not parse, and the language
server's analysis, where a bug inside the compiler is a diagnostic that says so. Torch is
left to tests/test_fuzz_hostile.py, whose cases are slower. Anything but a network or a
SpecError is a crash; libFuzzer's ``-rss_limit_mb`` makes memory a crash too, and its
``-timeout``, set far above any honest input, catches hangs. The corpus starts from docs/language.md's examples, the
shipped specs, tests/fixtures/fuzz_regressions/ and blocks of several paths written by
tests/fuzz_harness.py's PathsWriter from the grammar forms of docs/language.md.

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
    from resdsl.errors import CompilerBug, SpecError
    from resdsl.fmt import format_text
    from resdsl.ir import Limits
    from resdsl.lsp import analysis
    from resdsl.passes.parallel_paths import apply_parallel_folds, find_parallel_folds

#: Where `use` paths in fuzzed text resolve: a scratch folder holding copies of the seeds.
WORKDIR = Path(tempfile.mkdtemp(prefix="resdsl-atheris-"))


def seeds() -> list[bytes]:
    language = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    found = [text.encode() for text in re.findall(r"```\n(.*?)```", language, flags=re.S)]
    for folder in (ROOT / "specs", ROOT / "tests" / "fixtures" / "fuzz_regressions"):
        found += [path.read_bytes() for path in sorted(folder.rglob("*.res"))]
    import random

    from fuzz_harness import PathsWriter

    found += [PathsWriter(random.Random(seed)).spec().encode() for seed in range(64)]
    return found


#: Inputs naming "network" more often than this skip the language server's analysis: it
#: compiles every network of the file (the alias-chain regression holds a thousand), each
#: a compile that the target's own already covers.
ANALYSED_NETWORKS = 4


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    _format(text)
    if text.count("network") <= ANALYSED_NETWORKS:
        for error in analysis.analyze(text, WORKDIR / "fuzz.res").errors:
            if "failed inside the compiler" in error.message:  # a compiler bug, as an editor sees it
                raise AssertionError(error.message)
        analysis.clear_cache()
    try:
        network = resdsl.compile_text(text, path=str(WORKDIR / "fuzz.res"), limits=Limits())
    except SpecError as error:
        message = str(error)  # rendering the diagnostic must not crash either
        if "Traceback" in message:
            raise AssertionError(message) from None
        return
    for detail in DETAILS:
        to_dot([network], detail=detail, shapes=True, all_layers=True).source  # noqa: B018
    folded, _ = apply_parallel_folds(network, find_parallel_folds(network))
    folded.lint()


def _format(text: str) -> None:
    try:
        format_text(text, str(WORKDIR / "fuzz.res"))
    except SpecError:
        return
    except CompilerBug as error:  # the formatted text would not parse, or would mean otherwise
        raise AssertionError(str(error)) from None


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
