"""Run a ``torch.export`` archive (``model.pt2``) without ``torch.export.load``, and refuse any that is more
than data.

Why its own reader: ``torch.export.load`` unpickles (it retries ``torch.load`` with ``weights_only=False``
on files in torch.export's pre-2.7 layout), resolves any ``torch.*`` attribute path a graph names, and
imports ``torch._dynamo``, ``torch._inductor``, sympy and networkx (resident memory and start-up time in
every server process, docs/serving.md "Measured", none of which a forward pass needs). The archive itself is
plain: a JSON graph of ATen operator calls (``torch._export.serde.schema``) and raw tensor payloads. This
module reads both and runs the graph node by node, calling the same operators in the same order, so its
outputs are the ones ``torch.export.load(path).module()`` gives (tests/serving/test_archive_program.py
compares them bit for bit on every model the trainer and the benchmarks export, and on a zoo of layers).

A model file is data, so this reader is also the one place that decides what a ``.pt2`` may hold:

- the zip holds one folder with the members torch.export.save (torch 2.7 and later) writes, and nothing
  else; the pre-2.7 layout (``serialized_state_dict.pt`` and friends: pickles) is refused;
- weights and constants are raw tensor bytes; nothing is ever unpickled (the pickled sample inputs that
  torch.export.save adds are never read);
- every node calls an operator from the allow-list in serving/operators.py, with string and device
  arguments checked against the operator's schema, or the integer arithmetic of dynamic shapes;
- the program may not write to its own weights, buffers or constants (checked at load, and on every
  in-place call), so nothing is carried from one forward pass to the next;
- inputs are a flat list of tensors, outputs a tensor or a flat tuple or list of them.

Anything else (control flow such as ``torch.cond``, custom operators, state updates, nested inputs,
another schema major version) raises :class:`Unsupported`, and the model is refused with that reason.
Only a server started with ``--trust-model-files`` (off by default; docs/serving.md, "Threat model")
hands such a file to ``torch.export.load`` instead, which may run code from it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from serving import operators
from serving.program_steps import (
    SYM_OPS,
    Step,
    check_dims,
    compile_value,
    constants_of,
    discard,
    flat_constants,
    fused_plan,
    guard_writes,
    refs,
    resolve,
    store_in,
)
from serving.pt2_archive import Unsupported, read_archive, tree_leaves

log = logging.getLogger("serving.program")

_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)")
_SYMBOL = re.compile(r"Symbol\('([A-Za-z_][A-Za-z0-9_]*)'(?:, [^()]*)?\)")


def load_program(path: Path, *, trusted: bool = False) -> nn.Module:
    """The program in ``path`` as a module, run by this reader; Unsupported when the file holds more than
    it runs. ``trusted`` (the server's ``--trust-model-files``): hand such a file to ``torch.export.load``
    instead, which may unpickle it and run its code."""
    try:
        return ArchiveProgram.load(path)
    except Unsupported as why:
        if not trusted:
            raise
        log.warning(
            "%s: %s; loading it with torch.export.load because --trust-model-files is on (it may run "
            "code from the file)",
            path,
            why,
        )
        return torch.export.load(path).module()


# ------------------------------------------------------------------------------------------------ the program


class ArchiveProgram(nn.Module):
    """An exported program's graph, run node by node: a drop-in for ``ExportedProgram.module()`` on the
    graphs described in this module's docstring. Its tensors are buffers, so ``.to(device)`` moves them."""

    def __init__(
        self,
        graph: dict[str, Any],
        tensors: dict[str, torch.Tensor],
        ranges: dict[str, Any],
        in_spec: str,
        out_spec: str,
    ) -> None:
        super().__init__()
        self._slots: dict[str, int] = {}
        self._state: list[tuple[int, str]] = []  # (slot, buffer attribute)
        self._inputs: list[tuple[int, list[int | tuple[int, int] | None]]] = []  # (slot, dims: fixed, range, any)
        self._outputs: list[Any] = []
        self._storages: frozenset[int] | None = None
        self._setup_inputs(graph, tensors, ranges)
        self._aliases_state = {slot for slot, _ in self._state}
        """Slots holding the program's state or a view of it: in-place ops may not write to them."""
        self._graph_steps = [self._compile_node(node) for node in graph["nodes"]]
        self._setup_outputs(graph, in_spec, out_spec)
        self._size = len(self._slots)
        self._plan = self._schedule(self._graph_steps)
        self.fused = 0
        """How many convolution + ReLU pairs run as one oneDNN call (see :meth:`fuse_conv_relu`)."""

    @classmethod
    def load(cls, path: Path) -> ArchiveProgram:
        archive = read_archive(path)
        try:
            return cls(archive.graph, archive.tensors, archive.ranges, archive.in_spec, archive.out_spec)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise Unsupported(f"unexpected graph ({type(exc).__name__}: {exc})") from None

    # -------------------------------------------------------------------------------------------- compile

    def _schedule(self, steps: list[Step]) -> list[tuple[Any, ...]]:
        """What forward runs: each step with the slots to drop after it. Each intermediate value goes at
        its last use, as in FX's generated code: otherwise every activation of a pass stays alive to its
        end (docs/serving.md, "Measured", has the peak it saves)."""
        last_use = {}
        for index, step in enumerate(steps):
            for slot in refs([*step.args, *step.kwargs.values()]):
                last_use[slot] = index
        kept = set(refs(self._outputs))
        frees: list[list[int]] = [[] for _ in steps]
        for slot, index in last_use.items():
            if slot not in kept:
                frees[index].append(slot)
        return [
            (step.op, step.args, step.kwargs, step.store, tuple(free)) for step, free in zip(steps, frees, strict=True)
        ]

    def _slot(self, name: str) -> int:
        return self._slots.setdefault(name, len(self._slots))

    def _setup_inputs(self, graph: dict[str, Any], tensors: dict[str, torch.Tensor], ranges: dict[str, Any]) -> None:
        specs = graph["signature"]["input_specs"]
        if len(specs) != len(graph["inputs"]):
            raise Unsupported("the graph's inputs and its signature disagree")
        for index, spec in enumerate(specs):
            ((kind, body),) = spec.items()
            if kind == "user_input":
                if "as_tensor" not in body["arg"]:
                    raise Unsupported(f"a user input of kind {next(iter(body['arg']))}")
                name = body["arg"]["as_tensor"]["name"]
                self._inputs.append((self._slot(name), self._input_dims(graph, name, ranges)))
                continue
            fqn = {
                "parameter": "parameter_name",
                "buffer": "buffer_name",
                "tensor_constant": "tensor_constant_name",
            }.get(kind)
            if fqn is None:
                raise Unsupported(f"an input of kind {kind}")
            if body[fqn] not in tensors:
                raise Unsupported(f"{kind} '{body[fqn]}' has no stored tensor")
            attribute = f"_t{index}"
            self.register_buffer(attribute, tensors[body[fqn]])
            self._state.append((self._slot(body["arg"]["name"]), attribute))

    @staticmethod
    def _input_dims(graph: dict[str, Any], name: str, ranges: dict[str, Any]) -> list[int | tuple[int, int] | None]:
        """What each dimension of an input may be: a fixed size, a (min, max) range, or anything."""
        dims: list[int | tuple[int, int] | None] = []
        for size in graph["tensor_values"][name]["sizes"]:
            if "as_int" in size:
                dims.append(int(size["as_int"]))
                continue
            symbol = _SYMBOL.fullmatch(size.get("as_expr", {}).get("expr_str", ""))
            bounds = ranges.get(symbol.group(1)) if symbol else None
            dims.append(
                (int(bounds["min_val"]), int(bounds["max_val"]))
                if bounds and all(isinstance(bounds.get(k), int) for k in ("min_val", "max_val"))
                else None
            )
        return dims

    def _value(self, arg: dict[str, Any]) -> Any:
        return compile_value(arg, self._slots_of)

    def _slots_of(self, name: str) -> int:
        if name not in self._slots:
            raise Unsupported(f"'{name}' is used before it is computed")
        return self._slots[name]

    def _compile_node(self, node: dict[str, Any]) -> Step:
        target = node["target"]
        sym_op = SYM_OPS.get(target)
        if sym_op is not None:
            args = [self._value(i["arg"]) for i in node["inputs"]]
            # size arithmetic takes numbers only: no device, dtype or string can be laundered through it
            if not all(isinstance(c, int | float | bool) for c in flat_constants(args)):
                raise Unsupported(f"{target} takes a constant that is not a number")
            store, output = self._compile_outputs(target, node["outputs"])
            return Step(sym_op, args, {}, store, target, output)
        return self._compile_aten(node, target)

    def _compile_aten(self, node: dict[str, Any], target: str) -> Step:
        """An ATen operator call: allow-listed, its arguments checked, any write to the program's state refused."""
        op, name = _aten_op(target)
        args, kwargs, written, views_state = self._compile_arguments(op, target, node["inputs"])
        for argument, value in written:
            if any(slot in self._aliases_state for slot in refs([value])):
                raise Unsupported(
                    f"{target} writes to the program's own weights, buffers or constants ('{argument}'): "
                    "a model file may not change its state from one request to the next"
                )
        store, output = self._compile_outputs(target, node["outputs"])
        returns_view = any(r.alias_info is not None for r in op._schema.returns) or name in _UNMARKED_VIEWS
        if views_state and returns_view:  # a view of state is state: writes through it are refused too
            self._aliases_state.update(self._output_slots(node["outputs"]))
        run = operators.runnable(op)
        if written:
            positional = [named["name"] for named in node["inputs"][: len(args)]]
            run = guard_writes(
                run,
                target,
                [positional.index(n) for n, _ in written if n in positional],
                [n for n, _ in written if n in kwargs],
                self._state_storages,
            )
        return Step(run, args, kwargs, store, target, output)

    def _compile_arguments(
        self, op: torch._ops.OpOverload, target: str, inputs: list[dict[str, Any]]
    ) -> tuple[list[Any], dict[str, Any], list[tuple[str, Any]], bool]:
        """(positional, keyword, the (name, value) of those the op writes to, whether any is a view of the
        program's state), each argument checked against the operator's schema."""
        schema = {argument.name: argument for argument in op._schema.arguments}
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        written: list[tuple[str, Any]] = []
        views_state = False
        constants: dict[str, Any] = {}
        references: set[str] = set()
        for named in inputs:
            name, value = named["name"], self._value(named["arg"])
            _checked(operators.check_argument, op, name, constants_of(value))
            if value[0] == "const":
                constants[name] = value[1]
            else:
                references.add(name)
            alias = schema[name].alias_info
            if alias is not None and alias.is_write and refs([value]):
                written.append((name, value))
            views_state = views_state or any(slot in self._aliases_state for slot in refs([value]))
            # kind 1 (or unset, in older files) is positional, kind 2 keyword (schema.ArgumentKind)
            if named.get("kind") == 2:
                kwargs[name] = value
            elif kwargs:
                raise Unsupported(f"{target}: a positional argument after a keyword one")
            else:
                args.append(value)
        _checked(operators.check_call, op, constants, references)
        return args, kwargs, written, views_state

    def _output_slots(self, outputs: list[dict[str, Any]]) -> list[int]:
        slots = []
        for out in outputs:
            ((kind, value),) = out.items()
            if kind == "as_tensor":
                slots.append(self._slots[value["name"]])
            elif kind == "as_tensors":
                slots.extend(self._slots[t["name"]] for t in value)
        return slots

    def _state_storages(self) -> frozenset[int]:
        """Where the program's weights, buffers and constants live (cached until .to() moves them)."""
        if self._storages is None:
            self._storages = frozenset(
                ptr
                for buffer in self._buffers.values()
                if buffer is not None and (ptr := buffer.untyped_storage().data_ptr())
            )
        return self._storages

    def _apply(self, fn, recurse=True):
        self._storages = None  # .to(device) and .to(memory_format) give the state new storage
        return super()._apply(fn, recurse)

    def _compile_outputs(
        self, target: str, outputs: list[dict[str, Any]]
    ) -> tuple[Callable[[list[Any], Any], None], int | None]:
        def name_of(out: dict[str, Any]) -> str | None:
            ((kind, value),) = out.items()
            if kind == "as_tensor":
                return value["name"]
            if kind in ("as_sym_int", "as_sym_float", "as_sym_bool") and "as_name" in value:
                return value["as_name"]
            if kind == "as_none":
                return None
            raise Unsupported(f"{target}: an output of kind {kind}")

        slots: list[int | None]
        if len(outputs) == 1 and "as_tensors" in outputs[0]:
            slots = [self._slot(t["name"]) for t in outputs[0]["as_tensors"]]
        elif len(outputs) == 1:
            name = name_of(outputs[0])
            if name is None:
                return discard, None
            slot = self._slot(name)
            return store_in(slot), (slot if "as_tensor" in outputs[0] else None)
        else:
            slots = [None if (name := name_of(out)) is None else self._slot(name) for out in outputs]
        if not slots:
            return discard, None
        pairs = [(index, slot) for index, slot in enumerate(slots) if slot is not None]

        def store_many(env: list[Any], result: Any) -> None:
            for index, slot in pairs:
                env[slot] = result[index]

        return store_many, None

    def _setup_outputs(self, graph: dict[str, Any], in_spec: str, out_spec: str) -> None:
        for spec in graph["signature"]["output_specs"]:
            kind = next(iter(spec))
            if kind != "user_output":
                raise Unsupported(f"an output of kind {kind} (the program mutates state)")
        self._outputs = [self._value(out) for out in graph["outputs"]]
        version, spec = json.loads(in_spec)
        args, kwargs = spec["children_spec"] if spec["type"] == "builtins.tuple" else (None, None)
        if version != 1 or args is None or kwargs is None or kwargs["children_spec"]:
            raise Unsupported("the program takes keyword or nested inputs")
        container, count = tree_leaves(json.dumps([version, args]), "the input")
        if container != "tuple" or count != len(self._inputs):
            raise Unsupported("the program's inputs are not a flat list of tensors")
        self._container, leaves = tree_leaves(out_spec, "the output")
        if leaves != len(self._outputs):
            raise Unsupported("the output spec and the graph's outputs disagree")

    # -------------------------------------------------------------------------------------------- fusion

    def fuse_conv_relu(self, enable: bool = True) -> int:
        """Run each 2-D convolution whose one use is a ReLU as a single oneDNN call with the ReLU as its
        post-op (``mkldnn::_convolution_pointwise``, what torch.compile's CPU backend emits): one pass over
        the activation instead of two (docs/serving.md, "How a model runs"). CPU only: serving/tuning.py
        checks the outputs on a batch before keeping it. ``enable=False`` restores the graph as exported.
        Returns how many pairs were fused."""
        fused_op = getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if hasattr(torch.ops, "mkldnn") else None
        steps = self._graph_steps
        if not enable or fused_op is None or not torch.backends.mkldnn.is_available():
            self._plan, self.fused = self._schedule(steps), 0
            return 0
        plan, self.fused = fused_plan(steps, set(refs(self._outputs)), fused_op)
        self._plan = self._schedule(plan)
        return self.fused

    # -------------------------------------------------------------------------------------------- run

    def forward(self, *inputs: torch.Tensor) -> Any:
        if len(inputs) != len(self._inputs):
            raise TypeError(f"the program takes {len(self._inputs)} tensor(s), got {len(inputs)}")
        env: list[Any] = [None] * self._size
        for (slot, dims), tensor in zip(self._inputs, inputs, strict=True):
            check_dims(tensor, dims, slot)
            env[slot] = tensor
        buffers = self._buffers
        for slot, attribute in self._state:
            env[slot] = buffers[attribute]
        for op, args, kwargs, store, free in self._plan:
            store(env, op(*[resolve(a, env) for a in args], **{k: resolve(v, env) for k, v in kwargs.items()}))
            for slot in free:
                env[slot] = None
        results = [resolve(out, env) for out in self._outputs]
        if self._container is None:
            return results[0]
        return tuple(results) if self._container == "tuple" else results


def _aten_op(target: str) -> tuple[torch._ops.OpOverload, str]:
    """The allow-listed ATen overload a node's target names, and the operator's name; else Unsupported."""
    match = _ATEN_TARGET.fullmatch(target)
    packet = getattr(torch.ops.aten, match.group(1), None) if match else None
    op = getattr(packet, match.group(2), None) if match and packet is not None else None
    if match is None or not isinstance(op, torch._ops.OpOverload):
        raise Unsupported(f"operator {target}")
    _checked(operators.check_overload, op)
    return op, match.group(1)


def _checked(check: Callable[..., None], *args: Any) -> None:
    """An operators.py check, its refusal as Unsupported."""
    try:
        check(*args)
    except operators.Refused as why:
        raise Unsupported(str(why)) from None


_UNMARKED_VIEWS = frozenset({"_unsafe_view"})
"""Operators whose result shares its input's storage although their schema does not say so."""
