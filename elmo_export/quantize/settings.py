"""The settings of every precision: one typed description each, the manifest's `precision` entry.

fp32 and fp16 are not quantized, but they are described the same way, so that an export carries
one precision object (`ExportSettings.precision`) whatever it is: its `name` (one of
`contract.PRECISIONS`), its manifest entry (`to_dict`) and its parity tolerance
(`parity_tolerance`). The measurements behind the defaults are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Union

from elmo_export.onnx_graph import CNN_KERNEL, TOKEN_PROJECTION
from elmo_runtime import contract as C

if TYPE_CHECKING:
    from elmo_export.model import ElmoOptions
    from elmo_runtime.compare import Tolerance

# The op types whose constant weights are quantized: the graphs have no Gemm.
WEIGHT_OPS = ("MatMul",)


class _Precision:
    """What every precision's settings share: a name and the parity tolerance it is held to."""

    name: ClassVar[str]

    def parity_tolerance(self, options: ElmoOptions) -> Tolerance:
        """The tolerance the package must meet against the reference (`parity.tolerance_for`)."""
        from elmo_export.parity import tolerance_for  # imported here: parity pulls in torch

        return tolerance_for(self.name, options)


@dataclass(frozen=True)
class Fp32Settings(_Precision):
    """float32 weights and compute: the reference's own arithmetic, up to summation order."""

    name: ClassVar[str] = "fp32"

    def to_dict(self) -> dict:
        """The settings as recorded in the manifest's `precision` entry."""
        return {"name": self.name}


@dataclass(frozen=True)
class Fp16Settings(_Precision):
    """float16 weights and compute, float32 inputs and outputs (for GPUs).

    Built directly by `onnx_graph.build_*(precision="fp16")`: onnxconverter_common's float16
    pass breaks Loop/Scan bodies.
    """

    name: ClassVar[str] = "fp16"

    def to_dict(self) -> dict:
        """The settings as recorded in the manifest's `precision` entry."""
        return {"name": self.name, "weights": "float16", "compute": "float16", "inputs_outputs": "float32"}


@dataclass(frozen=True)
class Int8Settings(_Precision):
    """Int8 weights and per-row int8 activations for every MatMul with a constant weight (CPU).

    Each activation row (one token, one time step of one sentence) is quantized with its own
    scale, computed in the graph from that row alone; where the graph itself bounds an
    activation (the LSTM state `h` by `proj_clip`, `sigmoid(o) * tanh(c)` by 1) the scale is
    that fixed bound instead. Either way a row's vectors do not depend on the other rows of
    the batch, so a sentence gets the same vectors, bit for bit, alone or in any batch. The
    products run as `com.microsoft.MatMulIntegerToFloat` (CPU execution provider). The char
    embedding and all biases stay float.

    Attributes:
        per_channel: for the weights outside the recurrence (the char CNN, its highway and
            projection, the LSTM's input products over all steps): one scale per output column
            instead of one per matrix. More exact, and free there: these products are large
            and compute-bound.
        per_channel_steps: the same for the weights used at every time step (the LSTM's
            hidden-to-gate products and projection). Off by default: these products are
            memory-bound, and onnxruntime's kernel reads per-column weights slower, for little
            accuracy (benchmarks/RESULTS.md, "Design measurements").
        fixed_scales: where the graph bounds an activation (`activation_ranges`: the LSTM
            state within `proj_clip`, `sigmoid * tanh` within 1, rows of the char embedding
            table), quantize it with that fixed range instead of a scale per row: no reduction
            over each row before the product and no multiply by the row scales after it. The
            bound holds for every state the model produces; an initial state beyond
            `proj_clip`, which the model never produces, saturates.
        weight_type: "QInt8" (signed, the default) or "QUInt8" (zero point 128). QInt8
            weights with uint8 activations use onnxruntime's fast u8s8 kernels.
        reduce_range: 7-bit weights (the default). On CPUs without VNNI (AVX2), onnxruntime's
            u8s8 kernel adds pairs of 8-bit products in 16 bits, which saturates with 8-bit
            weights (benchmarks/RESULTS.md, "Design measurements").
    """

    per_channel: bool = True
    per_channel_steps: bool = False
    fixed_scales: bool = True
    weight_type: Literal["QInt8", "QUInt8"] = "QInt8"
    reduce_range: bool = True

    name: ClassVar[str] = "int8"

    def __post_init__(self) -> None:
        if self.weight_type not in ("QInt8", "QUInt8"):
            raise ValueError(f"weight_type is {self.weight_type!r}; choose QInt8 or QUInt8")

    def to_dict(self) -> dict:
        """The settings as recorded in the manifest's `precision` entry."""
        return {
            "name": self.name,
            "method": "dynamic, per row",
            "tool": "elmo_export.quantize.quantize_int8",
            "op": "com.microsoft.MatMulIntegerToFloat",
            **asdict(self),
            "op_types": list(WEIGHT_OPS),
            "activations": "uint8, one scale per row (per token and step) or the graph's fixed bound",
            "devices": ["cpu"],
        }


@dataclass(frozen=True)
class Int4Settings(_Precision):
    """Weight-only 4-bit block-wise quantization of MatMul weights (`MatMulNBits`).

    Attributes:
        block_size: weights along K sharing one scale (and zero point); a power of two >= 16.
            64 is the default: rounded to nearest, 128 lost accuracy and 32 put the `original`
            package over its size target (benchmarks/RESULTS.md, "Design measurements"; with
            GPTQ: "int4 variants").
        min_blocks: a matrix with few rows K gets smaller blocks, so that each column has at
            least this many (never below 16): the fixture-size models (K = 16 to 124) need it to
            meet the int4 tolerance; every matrix of the official architectures has K >= 256 and
            keeps `block_size`.
        symmetric: False stores a 4-bit zero point per block (asymmetric range; more exact for
            a little more size); True centres every block on zero.
        accuracy_level: MatMulNBits' `accuracy_level` (None: the op's default, float compute;
            4: int8 activations, faster on CPUs with VNNI, less exact).
        keep_float: weights left in float32, by name (parts of the initializer names that
            `onnx_graph` gives them): the char CNN kernels (`onnx_graph.CNN_KERNEL`) and the
            token projection (`onnx_graph.TOKEN_PROJECTION`). A small share of the weights,
            yet their errors reach every layer (benchmarks/RESULTS.md, "Design measurements").
        rounding: "gptq" (the default): each weight rounded so that its product changes least on
            the inputs the reference sees on the calibration text (`gptq.quantize_gptq`; the
            same size and op as round to nearest). "rtn": round to nearest, by onnxruntime's
            `MatMulNBitsQuantizer` (benchmarks/RESULTS.md, "int4 variants").
        damp: GPTQ's dampening, a fraction of the moments' mean diagonal added to it.
    """

    block_size: int = 64
    min_blocks: int = 4
    symmetric: bool = False
    accuracy_level: int | None = None
    keep_float: tuple[str, ...] = (CNN_KERNEL, TOKEN_PROJECTION)
    rounding: Literal["gptq", "rtn"] = "gptq"
    damp: float = 0.01

    name: ClassVar[str] = "int4"

    def __post_init__(self) -> None:
        b = self.block_size
        if type(b) is not int or b < 16 or b & (b - 1):
            raise ValueError(f"block_size is {b!r}; expected a power of two >= 16 (e.g. 32, 64, 128)")
        if type(self.min_blocks) is not int or self.min_blocks < 1:
            raise ValueError(f"min_blocks is {self.min_blocks!r}; expected an integer >= 1")
        if self.accuracy_level not in (None, 0, 1, 2, 3, 4):
            raise ValueError(f"accuracy_level is {self.accuracy_level!r}; expected None or 0-4")
        if self.rounding not in ("gptq", "rtn"):
            raise ValueError(f"rounding is {self.rounding!r}; expected 'gptq' or 'rtn'")
        if self.rounding == "gptq" and self.symmetric:
            raise ValueError("symmetric blocks are for rounding='rtn' only; GPTQ here stores a zero point per block")
        if not (isinstance(self.damp, (int, float)) and 0 < self.damp < 1):
            raise ValueError(f"damp is {self.damp!r}; expected a fraction between 0 and 1 (GPTQ's default 0.01)")

    def block_size_for(self, rows: int) -> int:
        """The block size for a weight of `rows` rows (K): `block_size`, smaller for small K."""
        block = self.block_size
        while block > 16 and rows < block * self.min_blocks:
            block //= 2
        return block

    def keeps_float(self, weight: str) -> bool:
        """Whether the initializer `weight` stays float32 (`keep_float`)."""
        return any(part in weight for part in self.keep_float)

    def to_dict(self) -> dict:
        """The settings as recorded in the manifest's `precision` entry."""
        gptq = self.rounding == "gptq"
        return {
            "name": self.name,
            **asdict(self),
            "method": "weight-only block-wise, GPTQ on calibration inputs"
            if gptq
            else "weight-only block-wise, round to nearest",
            "tool": "elmo_export.quantize.gptq.quantize_gptq"
            if gptq
            else "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer",
            "op": "com.microsoft.MatMulNBits",
            "keep_float": list(self.keep_float),
            "activations": "float32",
        }


QuantizationSettings = Union[Int8Settings, Int4Settings]
PrecisionSettings = Union[Fp32Settings, Fp16Settings, Int8Settings, Int4Settings]

# What each name of `contract.PRECISIONS` stands for by default.
DEFAULT_SETTINGS: dict[str, PrecisionSettings] = {
    s.name: s for s in (Fp32Settings(), Fp16Settings(), Int8Settings(), Int4Settings())
}
assert tuple(DEFAULT_SETTINGS) == C.PRECISIONS, "one settings class per precision of the contract"


def precision_settings(precision: str | PrecisionSettings, what: str = "precision") -> PrecisionSettings:
    """The settings object `precision` stands for: a name (or alias) of `contract.PRECISIONS`, or
    settings already.

    Raises:
        ValueError: an unknown name (the known ones are listed).
    """
    if isinstance(precision, (Fp32Settings, Fp16Settings, Int8Settings, Int4Settings)):
        return precision
    return DEFAULT_SETTINGS[C.precision_name(precision, what)]
