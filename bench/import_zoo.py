"""`resdsl import` over timm's zoo: how many of its convolutional networks come back
as specs that verify, and why the others do not.

  python bench/import_zoo.py [--families PATTERN ...] [--models NAME ...] [--input CxHxW] [--per-family N]
                             [--limit N] [--json]

For every timm model matching the families (issue 26's list by default; ``timm``'s
own glob patterns), at ``pretrained=False`` (nothing is downloaded): import it at a
small input, build the spec, load the model's weights with ``strict=True`` and compare
float64 outputs in eval and train mode (resdsl/importer/proof.py). One row per model:
imported, verified, the spec's lines, and the reason where it failed; then the total
and the failure classes (the construct each failure names). docs/import.md records
the latest figures.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: Issue 26's families: those of specs/timm/ and their siblings.
FAMILIES = (
    "resnet*",
    "resnext*",
    "seresnet*",
    "ecaresnet*",
    "skresnet*",
    "resnest*",
    "res2net*",
    "regnetx_*",
    "regnety_*",
    "repvgg_*",
    "dla*",
    "cs*",
    "densenet*",
    "efficientnet_b*",
    "mobilenetv2*",
    "mobilenetv3*",
    "convnext_*",
    "ghostnet*",
    "rexnet*",
    "dpn*",
)


def models(families: list[str], names: list[str] | None, per_family: int = 0) -> list[str]:
    import timm

    if names:
        return names
    found: list[str] = []
    for pattern in families:
        listed = timm.list_models(pattern)
        for name in listed[:per_family] if per_family else listed:
            if name not in found:
                found.append(name)
    return found


def failure_class(reason: str) -> str:
    """The construct a failure names, without the module path, numbers and file."""
    text = re.sub(r"^\S+:\d+: ", "", reason)
    text = re.sub(r"the module \S+ \(([\w.]+)\)", r"\1", text)
    text = re.sub(r"\d+", "N", text)
    return text[:160]


def run_one(name: str, input_shape: str) -> dict:
    from resdsl.errors import SpecError
    from resdsl.importer import import_with_model, verify

    row: dict = {"model": name, "imported": False, "verified": False, "lines": 0, "reason": ""}
    start = time.perf_counter()
    try:
        text, model, shape = import_with_model(f"timm/{name}", input=input_shape)
        row["imported"] = True
        row["lines"] = len(text.splitlines())
        check = verify(text, model, shape)
        row["verified"] = check.ok
        if not check.ok:
            row["reason"] = str(check)
    except SpecError as error:
        row["reason"] = str(error).splitlines()[0]
    except Exception as error:  # a bug of the importer's: recorded, and the run goes on
        row["reason"] = f"bug: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), metavar="PATTERN")
    parser.add_argument("--models", nargs="+", metavar="NAME", help="these models instead of the families'")
    parser.add_argument("--input", default="3x64x64", metavar="CxHxW", help="the input to trace and verify at")
    parser.add_argument(
        "--per-family", type=int, default=0, metavar="N", help="only the first N models of each family (0: all)"
    )
    parser.add_argument("--limit", type=int, default=0, metavar="N", help="only the first N models (0: all)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)

    names = models(args.families, args.models, args.per_family)
    if args.limit:
        names = names[: args.limit]
    rows = []
    for name in names:
        row = run_one(name, args.input)
        rows.append(row)
        if not args.json:
            mark = "verified" if row["verified"] else "imported" if row["imported"] else "failed"
            print(f"{name:40} {mark:9} {row['lines']:5} {row['seconds']:7.1f}s  {row['reason'][:200]}", flush=True)
    verified = sum(r["verified"] for r in rows)
    imported = sum(r["imported"] for r in rows)
    classes = Counter(failure_class(r["reason"]) for r in rows if not r["verified"])
    if args.json:
        json.dump({"rows": rows, "verified": verified, "imported": imported, "total": len(rows)}, sys.stdout, indent=1)
        print()
        return 0
    share = 100 * verified / len(rows) if rows else 0.0
    print(f"\ntotal: {verified} of {len(rows)} verified ({share:.1f}%), {imported} imported")
    for reason, count in classes.most_common():
        print(f"{count:5}  {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
