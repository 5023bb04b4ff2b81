"""Which ATen operators a model file may call: the ones that compute on tensors, and nothing else.

A ``.pt2`` is a JSON graph of operator calls (serving/program.py runs it). ``torch.ops.aten`` holds about
2,400 operator overloads, and some of them are not computation: ``from_file`` maps a file into a tensor
(and writes it back with ``shared=True``), ``set_`` points a tensor at any storage, ``resize_`` and
``empty`` hand out memory nobody wrote, others pin memory or manage streams and devices. A model file is
data, so the graph may only call operators from the allow-list below, chosen by what they do:

- :data:`ALLOWED` names operator *packets* (``add``, ``conv2d``); an in-place variant (``add_``) is allowed
  with its packet. An overload is then run only when every argument of its schema has a type from
  :data:`ARGUMENT_TYPES` (tensors, numbers, dtypes, layouts, memory formats, devices), so overloads that
  take a ``Storage``, a ``Stream``, a ``Dimname`` or a file name are refused even in an allowed packet;
- a string argument is accepted only where :data:`STRING_ARGUMENTS` lists it for that packet, and only with
  one of the values listed there (``gelu(approximate="tanh")``, ``pad(mode="reflect")``, an ``einsum``
  equation);
- a device argument may only name ``cpu`` or ``cuda``;
- the operators of :data:`ZERO_FILLED` allocate without initialising; they run, then the result's whole
  storage is zeroed, so a program can never read memory it did not write (earlier requests, the
  process's secrets), not even through the gaps of a strided allocation;
- :func:`check_call` refuses the calls whose kernels trust an argument or write what their schema does not
  declare: ``repeat_interleave`` with an ``output_size`` (ATen then skips its checks and writes out of
  bounds), ``batch_norm`` or ``instance_norm`` that would update their running statistics (a write into
  the model's state), memory pinning and non-strided layouts; integer division with a rounding mode is
  checked for the one case the CPU traps on (the minimum integer divided by -1).

Some operators were left out because a review found their kernels unsafe with hostile arguments:
``embedding_bag`` (negative offsets read before its buffer) and the anti-aliased resampling ops
(``_upsample_*_aa``: tiny scales write out of bounds). ATen's kernels are not hardened against hostile
arguments in general: see docs/serving.md, "Threat model", for what that leaves.

Everything else is refused with a message that names the operator. The list covers what ``torch.export``
emits for the layers of ``torch.nn`` (convolutions, norms, pooling, attention, recurrent layers,
activations, resampling, padding) and tensor arithmetic, shape and indexing code; tests/serving/
test_model_files.py exports a zoo of such models and checks that every operator they use is here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

import torch

_POINTWISE = """
abs absolute acos acosh arccos arccosh arcsin arcsinh arctan arctan2 arctanh asin asinh atan atan2 atanh
ceil clamp clamp_max clamp_min clip cos cosh deg2rad digamma erf erfc erfinv exp exp2 expm1 fix floor frac
i0 lgamma log log10 log1p log2 logit nan_to_num neg negative positive rad2deg reciprocal round rsqrt sgn
sigmoid sign signbit sin sinc sinh sqrt square tan tanh trunc
add sub subtract rsub mul multiply div divide true_divide floor_divide remainder fmod pow float_power
hypot maximum minimum max min fmax fmin copysign xlogy lerp addcmul addcdiv logaddexp logaddexp2 heaviside
bitwise_and bitwise_or bitwise_xor bitwise_not bitwise_left_shift bitwise_right_shift
__and__ __or__ __xor__ __lshift__ __rshift__
logical_and logical_or logical_xor logical_not
eq ne lt le gt ge greater greater_equal less less_equal not_equal isclose isnan isinf isfinite isneginf
isposinf isreal where masked_fill
"""
_ACTIVATIONS = """
relu relu6 leaky_relu elu selu celu gelu silu mish hardswish hardsigmoid hardtanh hardshrink softshrink
softplus prelu _prelu_kernel glu threshold log_sigmoid log_sigmoid_forward
softmax log_softmax _softmax _log_softmax _safe_softmax logsumexp
"""
_REDUCTIONS = """
sum mean prod amax amin argmax argmin aminmax all any std var std_mean var_mean linalg_vector_norm
cumsum cumprod cummax cummin logcumsumexp median nanmedian mode nansum nanmean count_nonzero
topk sort argsort kthvalue msort
"""
_LINEAR_ALGEBRA = """
mm bmm matmul addmm addbmm baddbmm addmv mv dot vdot linear bilinear einsum outer ger tensordot
_addmm_activation cdist _cdist_forward pdist _pdist_forward cosine_similarity pairwise_distance
"""
_NEURAL_NETWORK = """
conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d convolution _convolution
batch_norm native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training
_native_batch_norm_legit_functional instance_norm layer_norm native_layer_norm group_norm native_group_norm
rms_norm _fused_rms_norm
dropout native_dropout feature_dropout alpha_dropout feature_alpha_dropout
embedding one_hot
max_pool1d max_pool2d max_pool3d max_pool2d_with_indices max_pool3d_with_indices
avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d
_adaptive_avg_pool2d _adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d
upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d _upsample_nearest_exact2d
_upsample_nearest_exact3d upsample_linear1d upsample_bilinear2d upsample_bicubic2d upsample_trilinear3d
pixel_shuffle pixel_unshuffle channel_shuffle
pad constant_pad_nd reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d replication_pad2d
replication_pad3d _pad_circular grid_sampler grid_sampler_2d grid_sampler_3d affine_grid_generator
scaled_dot_product_attention _scaled_dot_product_flash_attention_for_cpu
lstm gru rnn_tanh rnn_relu lstm_cell gru_cell rnn_tanh_cell rnn_relu_cell im2col col2im unfold
"""
_SHAPE_AND_INDEXING = """
view reshape _unsafe_view _reshape_alias view_as reshape_as flatten unflatten squeeze unsqueeze permute
transpose t swapaxes swapdims movedim moveaxis expand expand_as broadcast_to contiguous clone alias detach
lift_fresh_copy narrow slice select index_select split split_with_sizes tensor_split chunk unbind
cat concat concatenate stack hstack vstack dstack flip roll rot90 repeat repeat_interleave tile diagonal diag
diag_embed tril triu as_strided gather scatter scatter_add scatter_reduce index _unsafe_index index_put
_unsafe_index_put index_add index_copy index_fill index_reduce masked_select masked_scatter take
take_along_dim nonzero argwhere select_scatter slice_scatter diagonal_scatter as_strided_scatter
searchsorted bucketize
view_copy permute_copy transpose_copy t_copy expand_copy squeeze_copy unsqueeze_copy
select_copy slice_copy split_copy split_with_sizes_copy unbind_copy diagonal_copy as_strided_copy
alias_copy detach_copy unfold_copy
"""
_TYPES_AND_CHECKS = """
to _to_copy type_as _assert_tensor_metadata _assert_async _assert_scalar _functional_assert_async
sym_constrain_range sym_constrain_range_for_size _local_scalar_dense item
sym_size sym_stride sym_numel sym_storage_offset
"""
_FACTORIES = """
zeros zeros_like ones ones_like full full_like arange linspace logspace eye scalar_tensor
empty empty_like empty_strided new_zeros new_ones new_full new_empty new_empty_strided
rand rand_like randn randn_like randint randint_like randperm bernoulli normal
zero fill copy
"""

ALLOWED: frozenset[str] = frozenset(
    " ".join(
        (
            _POINTWISE,
            _ACTIVATIONS,
            _REDUCTIONS,
            _LINEAR_ALGEBRA,
            _NEURAL_NETWORK,
            _SHAPE_AND_INDEXING,
            _TYPES_AND_CHECKS,
            _FACTORIES,
        )
    ).split()
)
"""Operator packets of ``torch.ops.aten`` a model file may call (and their in-place ``name_`` variants)."""

ARGUMENT_TYPES: frozenset[str] = frozenset(
    str.split("""
Tensor Optional[Tensor] List[Tensor] List[Optional[Tensor]] int Optional[int] List[int] Optional[List[int]]
float Optional[float] List[float] Optional[List[float]] bool Optional[bool] List[bool] number Optional[number]
complex Device Optional[Device] Optional[Generator] str Optional[str]
""")
)
"""Schema argument types an allowed overload may take, as torch prints them (``int`` covers SymInt,
ScalarType, Layout and MemoryFormat; ``number`` is a Scalar). A ``str`` only where STRING_ARGUMENTS
allows it; ``Optional[Generator]`` because a serialized graph can only pass None for it."""

_EINSUM = re.compile(r"[A-Za-z.,\->\s]{1,256}")
_MESSAGE = re.compile(r"[ -~]{0,256}")  # an assertion's message: printable ASCII on one line

STRING_ARGUMENTS: dict[tuple[str, str], frozenset[str] | re.Pattern[str]] = {
    ("gelu", "approximate"): frozenset({"none", "tanh"}),
    ("div", "rounding_mode"): frozenset({"trunc", "floor"}),
    ("divide", "rounding_mode"): frozenset({"trunc", "floor"}),
    **{(conv, "padding"): frozenset({"same", "valid"}) for conv in ("conv1d", "conv2d", "conv3d")},
    ("pad", "mode"): frozenset({"constant", "reflect", "replicate", "circular"}),
    ("einsum", "equation"): _EINSUM,
    ("scatter", "reduce"): frozenset({"add", "multiply"}),
    ("scatter_reduce", "reduce"): frozenset({"sum", "prod", "mean", "amax", "amin"}),
    ("index_reduce", "reduce"): frozenset({"prod", "mean", "amax", "amin"}),
    ("searchsorted", "side"): frozenset({"left", "right"}),
    ("_assert_async", "assert_msg"): _MESSAGE,
    ("_assert_scalar", "assert_msg"): _MESSAGE,
    ("_functional_assert_async", "assert_msg"): _MESSAGE,
}
"""The string arguments a graph may pass: (packet, argument name) -> the values it may take."""

_STRINGS = ("str", "Optional[str]")
DEVICE_TYPES = frozenset({"cpu", "cuda"})

ZERO_FILLED = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"})
"""Allocations that leave memory uninitialised: run, then zeroed (see the module docstring)."""


class Refused(Exception):
    """The graph calls an operator, or passes an argument, that a model file may not."""


def _packet_name(op: torch._ops.OpOverload) -> str:
    return op._schema.name.split("::", 1)[1]


def _base(packet: str) -> str:
    """``add_`` -> ``add``: an in-place variant belongs to its packet (``__and__`` stays as it is)."""
    return packet[:-1] if packet.endswith("_") and not packet.endswith("__") else packet


@cache
def check_overload(op: torch._ops.OpOverload) -> None:
    """Refused unless ``op`` is in an allowed packet and every argument type of its schema is allowed."""
    packet = _packet_name(op)
    base = _base(packet)
    if base not in ALLOWED:
        raise Refused(
            f"operator aten.{packet} is not one a model file may call (it is not on the allow-list "
            "of tensor computations in serving/operators.py)"
        )
    for argument in op._schema.arguments:
        kind = str(argument.type)
        if kind not in ARGUMENT_TYPES or (kind in _STRINGS and (base, argument.name) not in STRING_ARGUMENTS):
            raise Refused(
                f"operator aten.{packet}.{op._overloadname} takes '{argument.name}' of type {kind}, "
                "which a model file may not pass"
            )


def check_argument(op: torch._ops.OpOverload, name: str, value: Any) -> None:
    """Refused unless ``name`` is an argument of ``op``'s schema and ``value`` (already decoded) may be
    passed there: strings only from STRING_ARGUMENTS, devices only on DEVICE_TYPES."""
    schema = {argument.name: argument for argument in op._schema.arguments}
    target = f"aten.{_packet_name(op)}.{op._overloadname}"
    if name not in schema:
        raise Refused(f"{target} has no argument '{name}'")
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str):
            allowed = STRING_ARGUMENTS.get((_base(_packet_name(op)), name))
            if (
                str(schema[name].type) not in _STRINGS
                or allowed is None
                or not (allowed.fullmatch(item) if isinstance(allowed, re.Pattern) else item in allowed)
            ):
                raise Refused(f"{target}: '{name}' may not be {item[:80]!r}")
        elif isinstance(item, torch.device) and item.type not in DEVICE_TYPES:
            raise Refused(f"{target}: '{name}' names device {item}, not cpu or cuda")


_STATE_UPDATES = {"batch_norm": "training", "native_batch_norm": "training"}
"""Operators that update their running-statistics arguments in place when this flag is true, though their
schema declares no write (ATen's composite batch norms)."""


def check_call(op: torch._ops.OpOverload, constants: dict[str, Any], references: set[str]) -> None:
    """Refused unless a call's arguments are ones its kernel handles safely: ``constants`` are the decoded
    constant arguments by name, ``references`` the names of those that are computed values."""
    packet, target = _base(_packet_name(op)), f"aten.{_packet_name(op)}.{op._overloadname}"
    if packet in _STATE_UPDATES and constants.get(_STATE_UPDATES[packet], True) is not False:
        raise Refused(
            f"{target} must have {_STATE_UPDATES[packet]}=False: in training mode it updates the "
            "model's running statistics in place; export the model in eval mode (model.eval())"
        )
    if (
        packet == "instance_norm"
        and references & {"running_mean", "running_var"}
        and (constants.get("use_input_stats", True) is not False)
    ):
        raise Refused(
            f"{target} with running statistics must have use_input_stats=False: else it updates them "
            "in place; export the model in eval mode (model.eval())"
        )
    if packet == "repeat_interleave" and ("output_size" in references or constants.get("output_size") is not None):
        raise Refused(f"{target} may not be given an output_size: ATen trusts it without checking the repeats")
    if constants.get("pin_memory"):
        raise Refused(f"{target}: pin_memory=True is device management, which a model file may not do")
    layout = constants.get("layout")
    if layout is not None and layout != torch.strided:
        raise Refused(f"{target}: layout {layout} is not a strided tensor")


def runnable(op: torch._ops.OpOverload) -> Callable[..., Any]:
    """What the interpreter calls for ``op``: the operator itself; for an uninitialised allocation, the
    operator with its whole storage zeroed; for integer division with a rounding mode, the operator after
    a check for the one quotient the CPU traps on."""
    packet = _packet_name(op)
    if packet in ZERO_FILLED:

        def zero_filled(*args: Any, **kwargs: Any) -> torch.Tensor:
            result = op(*args, **kwargs)
            result.untyped_storage().fill_(0)
            return result

        return zero_filled
    if _base(packet) in ("div", "divide") and "rounding_mode" in {a.name for a in op._schema.arguments}:

        def checked_division(*args: Any, **kwargs: Any) -> Any:
            _check_integer_division(args[0], args[1] if len(args) > 1 else kwargs.get("other"))
            return op(*args, **kwargs)

        return checked_division
    return op


def _check_integer_division(dividend: Any, divisor: Any) -> None:
    """The minimum of an integer type divided by -1 overflows, and x86 traps (SIGFPE) in ATen's kernel."""
    if (
        not isinstance(dividend, torch.Tensor)
        or dividend.is_floating_point()
        or dividend.is_complex()
        or (isinstance(divisor, torch.Tensor) and (divisor.is_floating_point() or divisor.is_complex()))
        or (isinstance(divisor, float))
    ):
        return
    if dividend.dtype == torch.bool:
        return
    smallest = torch.iinfo(torch.result_type(dividend, divisor)).min
    if bool(((dividend == smallest) & (torch.as_tensor(divisor) == -1)).any()):
        raise RuntimeError("integer division of the type's minimum by -1 overflows")
