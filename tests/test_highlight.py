"""Highlighting: the TextMate grammar and the Pygments lexer colour .res files alike
and rightly.

Every shipped spec, the prelude and the examples of the language documents are
tokenised with both grammars (TextMate through tests/textmate.py on Oniguruma,
Pygments through the lexer the entry point registers). The formatter's lexer,
which knows nothing of colours, says independently where the keywords, layer
kinds, numbers, sizes, strings and comments are; both grammars must classify each
of those tokens as such.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import Comment, Keyword, Name, Number, Operator, String

from resdsl import fmt, vocabulary
from resdsl.highlight import TEXTMATE_PATH, rules, textmate_grammar, textmate_json
from resdsl.pygments_lexer import ResdslLexer
from tests.textmate import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT.parent / "shared" / "design"

# The round-2 surface syntax (shared/design/LANGUAGE-2.md), which the compiler's
# grammar may not accept yet: highlighting must already know it.
ROUND_TWO = """\
# Squeeze-and-excitation.
block se(channels, reduction=16) {
    mul {
        avgpool
        fc1: conv 1x1, channels // reduction, bias=true
        relu
        sigmoid
    }
}

block avg_down(out, stride) {
    if stride > 1 and not (out % 2 == 1) {
        avgpool 2x2, stride=stride, ceil_mode=true
    } else if stride <= 1 {
        identity
    } else {
        gn min(32, out)
    }
    tap shortcut
    drop_path 0.05 * block_index / (block_count - 1)
    se: se(out * 4, 16)
    add shortcut
}

network resnet50d(classes=1000) {
    input 3x224x224
    shortcut B
    projection avg_down
    stem {
        conv1.0: conv 3x3, 32, stride=2
        conv1.1: bn; conv1.2: relu
    }
    stage stages.0.blocks: 3 x preact_bottleneck(64)
    head {
        avgpool
        head.fc: conv 1x1, classes, bias=true
    }
}

network wide = resnet50d(classes=10) with shortcut C, checkpoint block
"""


def _documents() -> list[tuple[str, str]]:
    documents = [
        (str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")) for path in sorted(ROOT.glob("specs/**/*.res"))
    ]
    documents.append(("resdsl/prelude.res", (ROOT / "resdsl" / "prelude.res").read_text(encoding="utf-8")))
    for name in ("LANGUAGE.md", "LANGUAGE-2.md", "LANGUAGE-3.md"):
        path = DESIGN / name if (DESIGN / name).is_file() else ROOT / "tests" / "fixtures" / name
        if path.is_file():
            for index, example in enumerate(re.findall(r"```\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)):
                documents.append((f"{name} example {index}", example))
    documents.append(("round two", ROUND_TWO))
    return documents


DOCUMENTS = _documents()

# What each class of token must be, in both grammars: (TextMate scope prefix, Pygments token type).
KEYWORD = ("keyword.", Keyword)
LAYER = ("support.function.layer", Name.Builtin)
SIZE = ("constant.numeric.size", Number)
INTEGER = ("constant.numeric.integer", Number.Integer)
REAL = ("constant.numeric.float", Number.Float)
STRING = ("string.quoted", String.Double)
COMMENT = ("comment.line", Comment.Single)
CONSTANT = ("constant.language", Keyword.Constant)
WORD_OPERATOR = ("keyword.operator.logical", Operator.Word)


def _textmate(text: str) -> dict[int, tuple[str, str]]:
    """Offset of each token -> (its text, its innermost scope)."""
    offsets = [0]
    for line in text.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    return {
        offsets[token.line - 1] + token.column: (token.text, token.scopes[-1])
        for token in Tokenizer(textmate_grammar()).tokenize(text)
    }


def _pygments(text: str) -> dict[int, tuple[str, object]]:
    return {offset: (value, kind) for offset, kind, value in ResdslLexer().get_tokens_unprocessed(text)}


def _expected(text: str) -> list[tuple[int, str, tuple[str, object]]]:
    """Where the formatter's lexer finds each class of token that the grammars must colour."""
    line_offsets = [0]
    for line in text.splitlines(keepends=True):
        line_offsets.append(line_offsets[-1] + len(line))
    tokens = fmt.tokenize(text)
    expected = []
    statement: list[fmt.Token] = []

    def flush():
        heads = fmt._head_words(statement)
        for index, token in enumerate(statement):
            offset = line_offsets[token.line - 1] + token.column - 1
            if index in heads and token.text in vocabulary.layer_kinds():
                expected.append((offset, token.text, LAYER))
        statement.clear()

    for position, token in enumerate(tokens):
        offset = line_offsets[token.line - 1] + token.column - 1
        following = tokens[position + 1] if position + 1 < len(tokens) else None
        if token.kind in (fmt.NEWLINE, fmt.SEMI, fmt.LBRACE, fmt.RBRACE):
            flush()
            if token.kind == fmt.RBRACE:
                statement.append(token)
            continue
        if token.kind == fmt.COMMENT:
            expected.append((offset, token.text, COMMENT))
            continue
        statement.append(token)
        if token.kind == fmt.SIZE:
            expected.append((offset, token.text, SIZE))
        elif token.kind == fmt.NUMBER:
            expected.append((offset, token.text, INTEGER if token.text.isdigit() else REAL))
        elif token.kind == fmt.STRING:
            expected.append((offset, token.text, STRING))
        elif token.kind == fmt.NAME and token.text in vocabulary.CONSTANTS:
            expected.append((offset, token.text, CONSTANT))
        elif token.kind == fmt.NAME and token.text in vocabulary.WORD_OPERATORS:
            expected.append((offset, token.text, WORD_OPERATOR))
        elif token.kind == fmt.NAME and token.text in vocabulary.KEYWORDS:
            if following is not None and following.kind == fmt.COLON and len(statement) == 1:
                continue  # a keyword's word as a statement's label (`stem: repvgg_block(48)` in a stem)
            if token.text == "x" and statement[0].text != "stage":
                continue  # `x` is the repeat of a stage line only; elsewhere it is a name (`let x`)
            expected.append((offset, token.text, KEYWORD))
    flush()
    return expected


@pytest.mark.parametrize(("name", "text"), DOCUMENTS, ids=[name for name, _ in DOCUMENTS])
def test_both_grammars_classify_keywords_layers_numbers_sizes_strings_comments(name: str, text: str) -> None:
    textmate = _textmate(text)
    pygments = _pygments(text)
    expected = _expected(text)
    assert expected, "the document has tokens to check"
    for offset, word, (scope, token_type) in expected:
        assert textmate.get(offset, ("", ""))[0] == word, f"TextMate splits {word!r} at {offset} differently"
        assert textmate[offset][1].startswith(scope), f"TextMate: {word!r} is {textmate[offset][1]}, not {scope}"
        assert pygments.get(offset, ("", None))[0] == word, f"Pygments splits {word!r} at {offset} differently"
        assert pygments[offset][1] in token_type, f"Pygments: {word!r} is {pygments[offset][1]}, not {token_type}"


@pytest.mark.parametrize(("name", "text"), DOCUMENTS, ids=[name for name, _ in DOCUMENTS])
def test_both_grammars_agree_token_for_token(name: str, text: str) -> None:
    # One rule list makes both grammars: each TextMate scope maps onto one Pygments type.
    scope_to_type: dict[str, str] = {}
    for rule in rules():
        for group in rule.groups:
            if group.scope:
                scope_to_type[group.scope] = group.token
    textmate = {offset: entry for offset, entry in _textmate(text).items() if entry[1] in scope_to_type}
    pygments = _pygments(text)
    assert textmate
    for offset, (word, scope) in textmate.items():
        assert pygments.get(offset, ("", None))[0] == word, (offset, word)
        kind = pygments[offset][1]
        assert str(kind).removeprefix("Token.").endswith(scope_to_type[scope].split(".")[-1]), (word, scope, kind)


def test_round_two_words_have_their_classes() -> None:
    # Each word's first occurrence (avg_down is defined before `projection avg_down` names it).
    textmate: dict[str, str] = {}
    for _, (word, scope) in sorted(_textmate(ROUND_TWO).items()):
        textmate.setdefault(word, scope)
    pygments: dict[str, object] = {}
    for _, (word, kind) in sorted(_pygments(ROUND_TWO).items()):
        pygments.setdefault(word, kind)
    expectations = {
        "mul": ("keyword.other.join", Keyword.Pseudo),
        "tap": ("keyword.other.statement", Keyword),
        "if": ("keyword.control", Keyword),
        "else": ("keyword.control", Keyword),
        "projection": ("support.variable.setting", Name.Attribute),
        "conv1.0": ("entity.name.label", Name.Label),
        "head.fc": ("entity.name.label", Name.Label),
        "stages.0.blocks": ("entity.name.section.stage", Name.Namespace),
        "min": ("support.function.builtin", Name.Builtin.Pseudo),
        "preact_bottleneck": ("entity.name.function.call", Name.Function),
        "block_index": ("variable.language", Name.Variable.Magic),
        "avg_down": ("entity.name.type.block", Name.Class),
        "resnet50d": ("entity.name.function.network", Name.Function),
        "<=": ("keyword.operator.comparison", Operator),
        "%": ("keyword.operator.arithmetic", Operator),
        "ceil_mode": ("variable.parameter", Name.Variable),
    }
    for word, (scope, token_type) in expectations.items():
        assert textmate[word].startswith(scope), (word, textmate[word])
        assert pygments[word] in token_type, (word, pygments[word])


def _alternatives(pattern: str) -> set[str]:
    inner = re.search(r"\(([a-z0-9_|]+)\)", pattern)
    assert inner, pattern
    return set(inner.group(1).split("|"))


def test_word_lists_are_the_compilers_and_the_same_in_both_grammars() -> None:
    committed = json.loads(TEXTMATE_PATH.read_text(encoding="utf-8"))
    lexer_rules = {pattern for pattern, *_ in ResdslLexer.tokens["root"]}
    layer_rule = committed["repository"]["layer-kind"]["match"]
    assert layer_rule in lexer_rules  # the same regular expression in both
    layer_words = _alternatives(layer_rule)
    assert layer_words == set(vocabulary.layer_kinds())
    assert set(vocabulary.BASE_LAYER_KINDS) <= layer_words
    from resdsl.layers import LAYER_KINDS

    assert set(LAYER_KINDS) <= layer_words, "python -m resdsl.highlight regenerates the grammar"
    setting_rule = committed["repository"]["setting"]["match"]
    assert setting_rule in lexer_rules
    from resdsl.passes.expand import SETTINGS

    assert set(SETTINGS) <= set(re.search(r"\(((?:[a-z_]+\|)+[a-z_]+)\)", setting_rule).group(1).split("|"))


def test_committed_textmate_grammar_is_the_generated_one() -> None:
    assert TEXTMATE_PATH.read_text(encoding="utf-8") == textmate_json(), (
        "editors/vscode/syntaxes/resdsl.tmLanguage.json is stale: run python -m resdsl.highlight"
    )


def test_textmate_tokenizer_follows_vscode_rules() -> None:
    grammar = {
        "scopeName": "source.t",
        "patterns": [{"include": "#late"}, {"include": "#early"}, {"include": "#tie"}],
        "repository": {
            "late": {"match": "b+", "name": "late"},
            "early": {"match": "a(b)", "captures": {"1": {"name": "inner"}}},
            "tie": {"match": "ab", "name": "tie"},
        },
    }
    tokens = [(token.text, token.scopes) for token in Tokenizer(grammar).tokenize("xabbb")]
    # `a(b)` starts earliest, beating the first-listed `b+`, and ties with `ab` listed after it.
    assert tokens == [
        ("x", ("source.t",)),
        ("a", ("source.t",)),
        ("b", ("source.t", "inner")),
        ("bb", ("source.t", "late")),
    ]
    with pytest.raises(ValueError, match="begin/end"):
        Tokenizer({"scopeName": "s", "patterns": [{"begin": "a", "end": "b"}]})


def test_pygments_finds_the_lexer_by_name_and_file_name() -> None:
    assert isinstance(get_lexer_by_name("resdsl"), ResdslLexer)
    assert isinstance(get_lexer_for_filename("resnet50.res"), ResdslLexer)
    out = subprocess.run(
        [sys.executable, "-m", "pygments", "-l", "resdsl", "-f", "html", str(ROOT / "specs" / "resnet50.res")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '<span class="nb">conv</span>' in out.stdout
    assert '<span class="mi">64</span>' in out.stdout


def test_vscode_extension_is_consistent() -> None:
    folder = ROOT / "editors" / "vscode"
    package = json.loads((folder / "package.json").read_text(encoding="utf-8"))
    (language,) = package["contributes"]["languages"]
    assert language["id"] == "resdsl" and ".res" in language["extensions"]
    (grammar,) = package["contributes"]["grammars"]
    assert (folder / grammar["path"]).resolve() == TEXTMATE_PATH.resolve()
    assert grammar["scopeName"] == textmate_grammar()["scopeName"]
    configuration = json.loads((folder / language["configuration"]).read_text(encoding="utf-8"))
    assert configuration["comments"]["lineComment"] == "#"
    assert ["{", "}"] in configuration["brackets"]
    assert (folder / package["main"]).is_file()
    node = subprocess.run(["node", "--check", str(folder / package["main"])], capture_output=True, text=True)
    assert node.returncode == 0, node.stderr


def test_x_is_a_keyword_only_as_a_stages_repeat() -> None:
    text = (
        "block b(w) {\n    let x\n    conv 3x3, w\n    add x, y\n    from x\n}\n"
        "network n {\n    stage s: 2 x b(16)\n    stage t: n x b\n}\n"
    )
    grammar = Tokenizer(textmate_grammar())
    for line in (line for line in text.splitlines() if re.search(r"\bx\b", line)):
        pygments = [(kind, value) for kind, value in ResdslLexer().get_tokens(line) if value == "x"]
        textmate = [token for token in grammar.tokenize(line) if token.text == "x"]
        repeat = line.lstrip().startswith("stage")
        assert pygments and textmate, line
        for kind, _ in pygments:
            assert (kind in Keyword) == repeat, (line, kind)
        for token in textmate:
            assert any(scope.startswith("keyword.repeat") for scope in token.scopes) == repeat, (line, token.scopes)
