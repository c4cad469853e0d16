"""What to suggest when a checkpoint does not fit: the shipped spec whose keys it has, or ``skip=``.

Only consulted after a load has failed, so its cost (compiling the shipped specs and
building the likely ones on the meta device, which allocates nothing) is paid once,
on the error path.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

NAMING_HINT = "module names come from the spec's labels; see docs/language.md, 'Naming'"


def mismatch_hint(state: Mapping[str, Any], missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    """The most useful next step for a checkpoint whose keys (or shapes) do not fit."""
    if not missing and not unexpected and wrong:
        # The keys are right and only some shapes differ: typically a new head (classes=10).
        modules = sorted({key.split(" ", 1)[0].rsplit(".", 1)[0] for key in wrong})
        shown = ", ".join(repr(name) for name in modules)
        return f"to load all but these modules (a new head, say), name them: skip=({shown},)"
    matches = matching_specs(frozenset(state))
    if matches:
        # Several shipped specs can share one layout (timm's and torchvision's resnet50): name them all.
        name = matches[-1]
        listed = " and ".join(f"'{match}'" for match in matches)
        return (
            f"these weights have the keys of the shipped spec{'s' if len(matches) > 1 else ''} {listed}: "
            f'resdsl.load({name!r}, weights=...), or `use "resdsl:{name}"` in a spec'
        )
    return NAMING_HINT


def matching_specs(keys: frozenset[str]) -> list[str]:
    """Shipped specs whose state_dict has exactly these keys (shapes aside: classes may differ)."""
    return [name for name, spec_keys in _shipped_keys().items() if spec_keys == keys]


@cache
def _shipped_keys() -> dict[str, frozenset[str]]:
    from resdsl.backends.torch import build
    from resdsl.compiler import compile
    from resdsl.shipped import shipped_specs

    keys: dict[str, frozenset[str]] = {}
    for name in shipped_specs():
        network = compile(name)
        if network.layer_count() > 200:
            # The deepest CIFAR networks: no published checkpoint has their keys, and their
            # meta builds would cost more than all the others together.
            continue
        model = build(network, device="meta", initialise=False)
        keys[name] = frozenset(model.state_dict())
    return keys
