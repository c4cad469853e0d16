"""The minimal case of each class that the second hostile-input attack found (issue 11).

Exact messages are golden (tests/fixtures/errors); these tests hold the behaviour that
golden files cannot: where an error points, that its work is bounded (counted), that nothing blocks,
that only a bounded number of bytes is read.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import resdsl
from resdsl import cli
from resdsl.errors import LimitError, SpecError, UseError
from resdsl.evaluate import describe
from resdsl.ir import Limits, Network

NET = "network n{params} {{\n    input 3x32x32\n    stage s: 1 x basic(16)\n    head {{\n        avgpool\n        fc {fc}\n    }}\n}}\n"  # noqa: E501


def spec(params: str = "", fc: str = "10") -> str:
    return NET.format(params=params, fc=fc)


# Numbers --------------------------------------------------------------------------------


def test_integer_literal_past_pythons_digit_limit_is_a_spec_error_at_the_literal() -> None:
    with pytest.raises(SpecError) as caught:
        resdsl.compile_text(spec(fc="1" * 5000))
    assert (caught.value.line, caught.value.column) == (6, 12)
    assert "5,000 digits" in caught.value.message


def test_real_division_of_a_huge_integer_is_bounded() -> None:
    with pytest.raises(SpecError) as caught:
        resdsl.compile_text(spec(params="(c=1" + "0" * 309 + " / 3)"))
    assert caught.value.line == 1 and "64 bits" in caught.value.message


def test_a_chain_of_squares_stops_at_the_first_past_64_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    params = "(a0=3, " + ", ".join(f"a{i}=a{i - 1}*a{i - 1}" for i in range(1, 40)) + ")"
    evaluated, widest = _count_evaluations(monkeypatch)
    with pytest.raises(SpecError) as caught:
        resdsl.compile_text(spec(params=params))
    # Work is counted, not timed: a0 and three evaluations (a product of two names) for
    # each of a1..a6, and nothing wider than one product of two 64-bit integers is made.
    assert evaluated[0] <= 1 + 3 * 6, evaluated
    assert widest[0] <= 128, widest
    # a6 = 3**64 is the first past 2**63 - 1: the caret is on its default, a5*a5.
    text = spec(params=params)
    column = text.index("a6=") + len("a6=") + 1
    assert (caught.value.line, caught.value.column) == (1, column)


@pytest.mark.parametrize(
    "expression", ["9223372036854775807 + 1", "-9223372036854775807 - 2", "-(-9223372036854775807 - 1)"]
)
def test_every_operation_result_is_bounded(expression: str) -> None:
    with pytest.raises(SpecError, match="does not fit in 64 bits"):
        resdsl.compile_text(spec(params=f"(c={expression})"))
    resdsl.compile_text(spec(params="(c=9223372036854775806 + 1)"))  # the bound itself is fine


def test_reals_that_overflow_are_errors_where_they_overflow() -> None:
    with pytest.raises(SpecError, match="overflows to infinity") as caught:
        resdsl.compile_text(spec(params="(c=1e308 * 10)"))
    assert caught.value.column == len("network n(c=") + 1
    with pytest.raises(SpecError, match="overflows to infinity"):
        resdsl.compile_text(spec(fc="1e999"))


def test_huge_values_from_outside(capsys) -> None:
    assert cli.main(["check", "resnet18", "--param", "classes=1e305"]) == 1
    assert "must fit in 64 bits, got 1e+305" in capsys.readouterr().err
    for value in ("1e999", "inf", "nan", "9" * 5000):
        assert cli.main(["check", "resnet18", "--param", f"classes={value}"]) == 2
        assert "--param" in capsys.readouterr().err
    for value in (float("inf"), 2**64, "ten", [1]):
        with pytest.raises(SpecError, match="parameter 'classes'"):
            resdsl.compile("resnet18", classes=value)


def test_messages_about_huge_numbers_never_fail() -> None:
    assert describe(10**5000) == "a 16,610-bit integer"
    assert describe((3, 10**5000)) == "3xa 16,610-bit integer"


def _count_evaluations(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """Expressions evaluated, and the widest integer made (in bits), from here on."""
    from resdsl import evaluate

    evaluated, widest = [0], [0]
    inner = evaluate._evaluate

    def counting(expr, env):
        evaluated[0] += 1
        value = inner(expr, env)
        if isinstance(value, int):
            widest[0] = max(widest[0], value.bit_length())
        return value

    monkeypatch.setattr(evaluate, "_evaluate", counting)
    return evaluated, widest


# Files ----------------------------------------------------------------------------------


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.res"
    os.mkfifo(fifo)
    user = tmp_path / "user.res"
    user.write_text('use "pipe.res"\n' + spec())
    for path, where in ((fifo, None), (user, 1)):
        with pytest.raises(UseError, match="named pipe") as caught:
            resdsl.compile(path)
        assert caught.value.line == where


def test_devices_are_refused_before_reading(tmp_path: Path) -> None:
    link = tmp_path / "zero.res"
    link.symlink_to("/dev/zero")
    with pytest.raises(UseError, match="character device"):
        resdsl.compile(link)


def test_at_most_the_size_bound_plus_one_byte_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.res"
    big.write_bytes(b"#" * 50_000)
    read: list[int] = []
    real_read = os.read

    def counting_read(descriptor: int, size: int) -> bytes:
        data = real_read(descriptor, size)
        read.append(len(data))
        return data

    monkeypatch.setattr(os, "read", counting_read)
    with pytest.raises(LimitError, match="larger than the limit of 1,000 bytes"):
        resdsl.compile(big, limits=Limits(max_file_bytes=1000))
    assert sum(read) == 0  # its size says it is over the bound: not a byte is read (at most 1,001 otherwise)


# Size and work --------------------------------------------------------------------------


def test_four_mebibytes_of_semicolons_are_refused_after_the_token_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from resdsl import parser

    read = [0]
    pattern = parser._PRESCAN

    class CountingPattern:
        def finditer(self, text: str):
            for match in pattern.finditer(text):
                read[0] += 1
                yield match

    def no_lark() -> None:
        raise AssertionError("lark saw a spec past the token bound")

    monkeypatch.setattr(parser, "_PRESCAN", CountingPattern())
    monkeypatch.setattr(parser, "_parser", no_lark)
    with pytest.raises(LimitError, match="more than 20,000 tokens") as caught:
        resdsl.compile_text(";" * (4 * 1024 * 1024))
    # Work is counted, not timed: the pre-scan stops at the first token past the bound.
    assert read[0] == 20_001
    assert (caught.value.line, caught.value.column) == (1, 20_001)


def test_the_token_bound_counts_the_files_a_spec_uses(tmp_path: Path) -> None:
    half = "#\n" * 6_000
    for index in range(3):
        (tmp_path / f"part{index}.res").write_text(half)
    (tmp_path / "main.res").write_text("".join(f'use "part{i}.res"\n' for i in range(3)) + spec())
    with pytest.raises(LimitError, match="in this file and those it uses") as caught:
        resdsl.compile(tmp_path / "main.res")
    assert caught.value.path.endswith("part1.res")


def test_a_thousand_aliases_are_a_limit_error_not_a_recursion_error() -> None:
    text = spec().replace("network n", "network a0") + "".join(f"network a{i} = a{i - 1}\n" for i in range(1, 1000))
    for network in (None, "a999"):
        with pytest.raises(LimitError, match="chained more than 64 deep"):
            resdsl.compile_text(text, network=network)


def test_drawing_blocks_reads_the_network_order_a_fixed_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    from resdsl.backends.draw import to_dot

    calls = []
    real_order = Network.order
    monkeypatch.setattr(Network, "order", lambda self: calls.append(1) or real_order(self))
    for blocks in (10, 200):
        network = resdsl.compile_text(spec().replace("1 x basic", f"{blocks} x basic"))
        calls.clear()
        to_dot([network], detail="block")
        # Once per block made drawing quadratic (3,000 blocks: 40 s).
        assert len(calls) <= 3, len(calls)


# Silently accepted ------------------------------------------------------------------------


def test_two_parameters_of_one_name_are_an_error_at_the_second() -> None:
    with pytest.raises(SpecError, match="two parameters are named 'c'") as caught:
        resdsl.compile_text(spec(params="(c=1, c=2)"))
    assert caught.value.column == len("network n(c=1, ") + 1


def test_a_setting_twice_in_one_with_is_an_error_at_the_second() -> None:
    text = spec() + "network m = n with shortcut A, shortcut C\n"
    with pytest.raises(SpecError, match="given twice in this 'with'") as caught:
        resdsl.compile_text(text, network="m")
    assert caught.value.column == text.splitlines()[-1].index("shortcut C") + 1
