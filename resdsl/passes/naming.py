"""Pass 3: module names (LANGUAGE.md, "Naming"; LANGUAGE-2.md, "Names that match
any checkpoint").

A labelled layer is named by its label; an unlabelled one by its kind as written,
numbered in order within its scope (``conv1, bn1, relu1, conv2``...), labelled
layers counting toward the numbers. Stem, head and body layers share the top-level
scope; stage ``S`` holds its blocks as ``S.0, S.1, ...``. A block used inside a
block lives under its label (``layer1.0.se``), or, unlabelled, under its type
numbered like a layer (``se1``). A labelled branch is a scope of its own; an
unlabelled one adds its layers to the enclosing scope. A shortcut's layers live at
``downsample``: a zero-pad is ``downsample`` itself, a projection's unlabelled
layers are numbered by position (``downsample.0``, ``downsample.1``), as in
``nn.Sequential``.

Labels and stage names may be dotted module paths (``conv1.0``, ``stages.0.blocks``).
Each segment must be a Python identifier or a number, not a keyword and not an
attribute that every ``torch.nn.Module`` has (``forward``, ``training``...): those
are refused at the label with a hint, never renamed behind the user's back.

Writes ``name`` on every node and ``path`` on every block instance.
"""

from __future__ import annotations

import keyword
from collections import Counter

from resdsl.errors import Note, Pos, SpecError
from resdsl.ir import NameScope, Network, Node

#: Attributes every torch.nn.Module has (dir(nn.Module) and an instance's own), and
#: those resdsl adds to built modules. A module registered under one of them would
#: break the model or be unreachable. tests/test_naming.py checks this list against torch.
RESERVED_NAMES = frozenset(
    [
        "T_destination",
        "__annotations__",
        "__call__",
        "__class__",
        "__delattr__",
        "__dict__",
        "__dir__",
        "__doc__",
        "__eq__",
        "__format__",
        "__ge__",
        "__getattr__",
        "__getattribute__",
        "__getstate__",
        "__gt__",
        "__hash__",
        "__init__",
        "__init_subclass__",
        "__le__",
        "__lt__",
        "__module__",
        "__ne__",
        "__new__",
        "__reduce__",
        "__reduce_ex__",
        "__repr__",
        "__setattr__",
        "__setstate__",
        "__sizeof__",
        "__str__",
        "__subclasshook__",
        "__weakref__",
        "_apply",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_buffers",
        "_call_impl",
        "_compiled_call_impl",
        "_forward_hooks",
        "_forward_hooks_always_called",
        "_forward_hooks_with_kwargs",
        "_forward_pre_hooks",
        "_forward_pre_hooks_with_kwargs",
        "_get_backward_hooks",
        "_get_backward_pre_hooks",
        "_get_name",
        "_is_full_backward_hook",
        "_load_from_state_dict",
        "_load_state_dict_post_hooks",
        "_load_state_dict_pre_hooks",
        "_maybe_warn_non_full_backward_hook",
        "_modules",
        "_named_members",
        "_non_persistent_buffers_set",
        "_parameters",
        "_register_load_state_dict_pre_hook",
        "_register_state_dict_hook",
        "_replicate_for_data_parallel",
        "_save_to_state_dict",
        "_slow_forward",
        "_state_dict_hooks",
        "_state_dict_pre_hooks",
        "_version",
        "_wrapped_call_impl",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
        "network",
        "resdsl_network",
        "checkpoint",
    ]
)


def check_path(path: str, pos: Pos | None, what: str) -> None:
    """Refuse a label or stage name that cannot be a module path."""
    for segment in path.split("."):
        if not segment:
            raise SpecError(f"the {what} '{path}' has an empty part", pos, "write module paths as a.b.0")
        if segment.isdigit():
            continue
        if not segment.isidentifier() or keyword.iskeyword(segment):
            reason = "a Python keyword" if keyword.iskeyword(segment) else "not a name"
            raise SpecError(
                f"'{segment}' in the {what} '{path}' is {reason} and cannot name a module",
                pos,
                f"choose another name, such as '{segment}_'",
            )
        if segment in RESERVED_NAMES:
            raise SpecError(
                f"'{segment}' in the {what} '{path}' is an attribute every torch module has",
                pos,
                f"choose another name, such as '{segment}_' (see docs/language.md, 'Naming')",
            )


def assign_names(network: Network) -> None:
    graph = network.graph
    paths: dict[int, str] = {}  # id(NameScope) -> its module path
    counters: dict[int, Counter] = {}
    positions: dict[int, int] = {}
    taken: dict[str, int] = {}

    def resolve(scope: NameScope) -> str:
        key = id(scope)
        if key in paths:
            return paths[key]
        if scope.parent is None:
            path = ""
        else:
            parent = resolve(scope.parent)
            if scope.label is not None:
                check_path(scope.label, scope.pos, "name")
                local = scope.label
            else:
                counter = counters.setdefault(id(scope.parent), Counter())
                counter[scope.written] += 1
                local = f"{scope.written}{counter[scope.written]}"
            path = f"{parent}.{local}" if parent else local
        paths[key] = path
        return path

    for node in graph.walk():
        layer = node.layer
        if layer.fixed_name is not None:
            node.name = layer.fixed_name
            continue
        scope: NameScope = node.names
        prefix = resolve(scope)
        label = node.label
        if label is not None and label.startswith(".."):
            # A module of the scope around this one: a projection's layer beside the block's own.
            prefix = resolve(scope.parent) if scope.parent is not None else ""
            label = local = label[2:]
        elif scope.by_position:
            position = positions.get(id(scope), 0)
            positions[id(scope)] = position + 1
            local = label if label is not None else str(position)
        else:
            counter = counters.setdefault(id(scope), Counter())
            counter[node.written] += 1
            local = label if label is not None else f"{node.written}{counter[node.written]}"
        if label is not None:
            check_path(label, node.label_pos or node.pos, "label")
        name = f"{prefix}.{local}" if prefix else local
        # Kinds that build no module (joins, identity) may share a name: nothing is registered under it.
        if name in taken and layer.builds_module:
            raise SpecError(
                f"two layers would both be named '{name}'",
                _label_pos(node),
                "give one of them another label",
                [Note("the other one", _label_pos(graph.node(taken[name])))],
            )
        if layer.builds_module:
            taken[name] = node.id
        node.name = name
    for block in network.blocks:
        block.path = resolve(block.names)
    _check_nesting(network, taken)


def _check_nesting(network: Network, taken: dict[str, int]) -> None:
    """A module cannot hold another: `conv1` a convolution and `conv1.0` a layer."""
    graph = network.graph
    stages: dict[str, Pos] = {}
    for block in network.stage_blocks():
        stages.setdefault(block.stage, block.names.pos)
    for stage, pos in stages.items():
        check_path(stage, pos, "stage name")
        if stage in taken:
            raise SpecError(
                f"stage '{stage}' has the same name as the layer '{stage}'", pos, "rename the stage or the layer"
            )
        parts = stage.split(".")
        for name in (".".join(parts[:end]) for end in range(1, len(parts))):
            if name in taken:
                raise SpecError(
                    f"stage '{stage}' would live inside the layer '{name}'", pos, "rename the stage or the layer"
                )
    for name, node in taken.items():
        parts = name.split(".")
        for end in range(1, len(parts)):
            prefix = ".".join(parts[:end])
            if prefix in taken:
                raise SpecError(
                    f"the layer '{name}' would live inside the layer '{prefix}'",
                    _label_pos(graph.node(node)),
                    "a layer cannot contain other modules; rename one of them",
                    [Note(f"'{prefix}' is here", _label_pos(graph.node(taken[prefix])))],
                )


def _label_pos(node: Node) -> Pos:
    return node.label_pos or node.pos
