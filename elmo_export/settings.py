"""How to export: `ExportSettings`, the keyword arguments of `export` and `export_package`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elmo_export.quantize.settings import Int4Settings, PrecisionSettings, QuantizationSettings, precision_settings
from elmo_runtime import contract as C


@dataclass(frozen=True)
class ExportSettings:
    """How to export; the keyword arguments of `export` and `export_package`.

    Attributes:
        precision: "fp32" (or its alias "none"), "fp16", "int8", "int4", or the settings of one
            (`Fp32Settings`, `Fp16Settings`, `Int8Settings`, `Int4Settings`); a name becomes its
            default settings, so that this attribute is always a settings object.
        initial_state: "warm" (ship the state after the built-in warm-up text) or "zero".
        opset: ONNX opset of the graphs; None: `contract.DEFAULT_OPSET`.
        force: replace an existing package at the output (only once the new one is verified).
        progress: tqdm progress bars for the long steps.
        calibration: int4 (GPTQ) only: a UTF-8 text file of tokenized sentences, one a line, to
            calibrate the rounding on (`calibration.py`); None: the built-in English text.
        exact_activations: write sigmoid and tanh out in exactly rounded float32 ops instead of
            ONNX Runtime's Sigmoid and Tanh, whose rounding differs between builds (x86, wasm):
            int8 packages then compute the same bits in every ONNX Runtime build, onnxruntime-web
            included, at about twice the run time. Not for fp16 (its graphs compute in float16).
    """

    precision: str | PrecisionSettings = "fp32"
    initial_state: str = C.WARM
    opset: int | None = None
    force: bool = False
    progress: bool = True
    calibration: str | Path | None = None
    exact_activations: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", precision_settings(self.precision))
        C.check_state_mode(self.initial_state, "initial_state")
        if not isinstance(self.exact_activations, bool):
            raise TypeError(f"exact_activations must be True or False, not {self.exact_activations!r}")
        if self.exact_activations and self.precision.name == "fp16":
            raise ValueError(
                "exact activations are float32 ops; an fp16 package computes in float16: export fp32, int8 or int4"
            )
        if self.opset is not None:
            C.check_opset(self.opset)
        if self.calibration is not None:
            if not self.calibrated:
                name = self.precision.name
                raise ValueError(
                    f"a calibration text is for int4 with GPTQ rounding; this export is {name}"
                    + (" with round to nearest" if name == "int4" else "")
                )
            if not Path(self.calibration).is_file():  # before any slow step
                raise FileNotFoundError(f"calibration text {self.calibration}: no such file")

    @property
    def calibrated(self) -> bool:
        """Whether the quantizer needs a calibration text (int4 with GPTQ rounding)."""
        return isinstance(self.precision, Int4Settings) and self.precision.rounding == "gptq"

    @property
    def quantization(self) -> QuantizationSettings | None:
        """The quantizer's settings; None for fp32 and fp16, which the graph builders make."""
        return None if self.precision.name in ("fp32", "fp16") else self.precision

    @property
    def activation_functions(self) -> str:
        """How the graphs compute sigmoid and tanh, as the manifest records it (`contract.ACTIVATION_FUNCTIONS`)."""
        return C.EXACT_ACTIVATIONS if self.exact_activations else C.ONNXRUNTIME_ACTIVATIONS

    @property
    def graph_opset(self) -> int:
        return C.DEFAULT_OPSET if self.opset is None else self.opset
