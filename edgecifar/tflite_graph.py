"""What a ``.tflite`` file holds, read from its flatbuffer: the ops in it, its tensor types, its MACs.

Works on any TFLite file, including ones this project did not make (no manifest needed). Reads the
flatbuffer with the schema that LiteRT ships (``ai_edge_litert.schema_py_generated``, part of the base
install); never runs the model and never imports TensorFlow.

- ``ops``: builtin op names (``CONV_2D``, ``GELU``...) per operator, custom ops as ``CUSTOM:name``.
- ``full_integer``: every op except QUANTIZE/DEQUANTIZE takes integer tensors (what a microcontroller
  runs); fp16 and dynamic-range files compute in float and are not; ``float_part`` says where a file does
  (every op, its stem, its head).
- ``macs``: multiply-accumulates of one invocation, summed over CONV_2D, DEPTHWISE_CONV_2D and
  FULLY_CONNECTED from their filter and output shapes (the rest is negligible), the same count as
  :func:`edgecifar.models.stats.count_macs` on the Keras model.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from edgecifar.errors import ModelError

#: Ops that convert between float and integer at the edges of a full-integer graph.
_EDGE_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
_FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64"})
#: Tensor types of shape arithmetic (SHAPE -> STRIDED_SLICE -> PACK in a float file): neither float nor int8 work.
_SHAPE_TYPES = frozenset({"INT32", "INT64", "BOOL"})
_MAC_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"})


@dataclass(frozen=True)
class Operator:
    """One operator: its op name and its input/output tensor indices (-1 = an omitted optional input)."""

    name: str
    code: int | None        # builtin code, None for a custom op
    subgraph: int
    index: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    axis: int | None = None  # CONCATENATION's axis (the one option read: see Graph.batch_grows)


@dataclass(frozen=True)
class Graph:
    """The parts of a ``.tflite`` file the microcontroller check needs."""

    operators: tuple[Operator, ...]
    tensor_types: tuple[tuple[str, ...], ...]          # per subgraph: TensorType name of each tensor
    tensor_shapes: tuple[tuple[tuple[int, ...], ...], ...]

    @property
    def ops(self) -> Counter:
        """Op name -> how many operators use it, in order of first use."""
        return Counter(op.name for op in self.operators)

    def _float_inputs(self, op: Operator) -> list[str]:
        types = self.tensor_types[op.subgraph]
        return [types[i] for i in op.inputs if i >= 0 and types[i] in _FLOAT_TYPES]

    def _shape_only(self, op: Operator) -> bool:
        types = self.tensor_types[op.subgraph]
        return all(types[i] in _SHAPE_TYPES for i in op.inputs if i >= 0)

    @property
    def float_ops(self) -> tuple[Operator, ...]:
        """The operators, besides QUANTIZE/DEQUANTIZE, that take a float tensor: they compute in float."""
        return tuple(op for op in self.operators if op.name not in _EDGE_OPS and self._float_inputs(op))

    @property
    def full_integer(self) -> bool:
        return bool(self.operators) and not self.float_ops

    def float_part(self) -> str | None:
        """Where the file computes in float, in words that name its kind (None when full-integer).

        Why: "not full-integer" alone left a user of ``mnv2_ft128_int8.tflite`` (int8 input and output, its first
        ops in float32, as ``export --int8-float-ops`` keeps them) to guess. No per-file counts, so that files
        with the same fault read the same.
        """
        if not self.operators:
            return "it has no operators"
        floats = self.float_ops
        if not floats:
            return None
        kinds = "/".join(sorted({t.lower() for op in floats for t in self._float_inputs(op)}))
        computing = [op for op in self.operators if op.name not in _EDGE_OPS and not self._shape_only(op)]
        n = len(floats)
        shapes = (  # first match: float throughout, then a float stem, then a float head
            (n == len(computing), f"every op computes in {kinds}, as in a float, fp16 or dynamic-range file"),
            (tuple(computing[:n]) == floats, f"its stem computes in {kinds}, as export --int8-float-ops keeps it"),
            (tuple(computing[-n:]) == floats, f"its head computes in {kinds}"),
        )
        return next((text for matches, text in shapes if matches),
                    f"{n} of its {len(computing)} ops compute in {kinds}, the first {floats[0].name}")

    @property
    def batch_grows(self) -> bool:
        """Whether the batch grows at run time: a CONCATENATION along axis 0 whose stored output holds fewer
        items than its inputs, as a test-time-augmentation file stacks its views (export --tta; the stored
        shapes say batch 1). A runtime with fixed shapes (TFLite Micro) cannot run it."""
        for op in self.operators:
            shapes = self.tensor_shapes[op.subgraph]
            ins = [shapes[i] for i in op.inputs if i >= 0]
            out = shapes[op.outputs[0]] if op.outputs else ()
            if op.name == "CONCATENATION" and out and op.axis in (0, -len(out)) and all(ins):
                if sum(shape[0] for shape in ins) > out[0]:
                    return True
        return False

    @property
    def macs(self) -> int:
        total = 0
        for op in self.operators:
            if op.name not in _MAC_OPS or len(op.inputs) < 2:
                continue
            shapes = self.tensor_shapes[op.subgraph]
            weights, out = shapes[op.inputs[1]], shapes[op.outputs[0]]
            if op.name == "CONV_2D":            # filter [out_ch, kh, kw, in_ch / groups]
                inner = math.prod(weights[1:])
            elif op.name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, out_ch]: one tap per output channel
                inner = math.prod(weights[1:3])
            else:                               # FULLY_CONNECTED: filter [units, inputs]
                inner = weights[-1]
            total += math.prod(out) * inner
        return int(total)


def _builtin_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _type_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


def _flatbuffer(source: str | Path | bytes) -> tuple[str, bytes]:
    """(its name for messages, its bytes) of a TFLite file given by path or bytes; one ModelError line when it
    cannot be read or is not a TFLite flatbuffer."""
    name = "model" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    except OSError as exc:
        raise ModelError(f"{name}: cannot read ({exc.strerror or exc})") from None
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(f"{name}: not a TFLite flatbuffer (no TFL3 identifier)")
    return name, data


def read(source: str | Path | bytes) -> Graph:
    """Parse a ``.tflite`` file (a path or its bytes); a ModelError line when it is not one."""
    from ai_edge_litert import schema_py_generated as schema

    name, data = _flatbuffer(source)
    try:
        return _parse(schema.Model.GetRootAs(data, 0))
    except Exception as exc:  # a truncated or corrupt flatbuffer raises struct/index errors
        raise ModelError(f"{name}: corrupt TFLite flatbuffer ({type(exc).__name__}: {exc})") from None


def _concat_axis(op, schema) -> int | None:
    """A CONCATENATION's axis from its builtin options (None for any other op)."""
    if op.BuiltinOptionsType() != schema.BuiltinOptions.ConcatenationOptions:
        return None
    table, options = op.BuiltinOptions(), schema.ConcatenationOptions()
    options.Init(table.Bytes, table.Pos)
    return int(options.Axis())


def _parse(model) -> Graph:
    from ai_edge_litert import schema_py_generated as schema

    builtin, types = _builtin_names(), _type_names()
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())  # as TFLite's GetBuiltinCode
        custom = oc.CustomCode()
        if builtin.get(code) == "CUSTOM":
            codes.append((f"CUSTOM:{custom.decode() if custom else '?'}", None))
        else:
            codes.append((builtin.get(code, f"BUILTIN_{code}"), code))
    operators, tensor_types, tensor_shapes = [], [], []
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        tensors = [sg.Tensors(t) for t in range(sg.TensorsLength())]
        tensor_types.append(tuple(types.get(t.Type(), str(t.Type())) for t in tensors))
        tensor_shapes.append(tuple(tuple(max(int(d), 1) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
                                   for t in tensors))
        for o in range(sg.OperatorsLength()):
            op = sg.Operators(o)
            name, code = codes[op.OpcodeIndex()]
            ins = tuple(int(i) for i in op.InputsAsNumpy()) if op.InputsLength() else ()
            outs = tuple(int(i) for i in op.OutputsAsNumpy()) if op.OutputsLength() else ()
            operators.append(Operator(name, code, s, o, ins, outs, _concat_axis(op, schema)))
    return Graph(tuple(operators), tuple(tensor_types), tuple(tensor_shapes))


#: The custom op that ends a lookup model: no runtime has it, so loading stops there, before any kernel runs.
SENTINEL = "EDGECIFAR_END_OF_LOOKUP"


def lookup_model(data: bytes, stand_ins: set[str] = frozenset()) -> bytes:
    """A copy of the model for asking a runtime which ops it lacks, without running any kernel.

    The ops named in ``stand_ins`` become ADD (a runtime that reports its first missing op then moves on
    to the next one), and a custom :data:`SENTINEL` op is appended to the last subgraph: an interpreter
    that finds every op looks the sentinel up last and fails there, before any op is prepared. So loading
    it names either the first missing op or the sentinel.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    for code in model.operatorCodes:
        number = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = builtin.get(number, f"BUILTIN_{number}")
        if name == "CUSTOM":
            name = (code.customCode or b"?").decode() if isinstance(code.customCode, bytes) else str(code.customCode)
        if name in stand_ins:
            code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
            code.customCode = None
    sentinel = schema.OperatorCodeT()
    sentinel.builtinCode = sentinel.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    sentinel.customCode = SENTINEL
    sentinel.version = 1
    model.operatorCodes.append(sentinel)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = len(model.operatorCodes) - 1, [], []
    model.subgraphs[-1].operators.append(op)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def metadata(source: str | Path | bytes, name: str) -> bytes | None:
    """The bytes of the metadata entry ``name`` (a file's contract, say), or None when the file has none.
    Reads the flatbuffer only; a corrupt file is one ModelError line, as in :func:`read`."""
    from ai_edge_litert import schema_py_generated as schema

    where, data = _flatbuffer(source)
    try:
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if (entry.Name() or b"").decode("utf-8", "replace") == name:
                buffer = model.Buffers(entry.Buffer())
                return buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
    except Exception as exc:  # a truncated or corrupt flatbuffer raises struct/index errors
        raise ModelError(f"{where}: corrupt TFLite flatbuffer ({type(exc).__name__}: {exc})") from None
    return None


def with_metadata(data: bytes, name: str, payload: bytes) -> bytes:
    """A copy of the model with metadata entry ``name`` holding ``payload`` (an entry of that name replaced), as
    TFLite's own metadata (``min_runtime_version``, the Model Maker's ``TFLITE_METADATA``) is stored: a buffer
    the graph never reads, so the file computes exactly what it did."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    model.metadata = [m for m in (model.metadata or []) if (m.name or b"") not in (name, name.encode())]
    buffer = schema.BufferT()
    buffer.data = list(payload)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(data) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def input_shape(source: str | Path | bytes) -> list[int] | None:
    """The first subgraph's first input shape (-1 for a dynamic dimension), read from the flatbuffer without an
    interpreter; None when the file has no such input or cannot be parsed."""
    from ai_edge_litert import schema_py_generated as schema

    try:
        data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
        subgraph = schema.Model.GetRootAs(data, 0).Subgraphs(0)
        tensor = subgraph.Tensors(int(subgraph.Inputs(0)))
        dims = tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength() else tensor.ShapeAsNumpy()
        return [int(d) for d in dims]
    except Exception:  # a file the runtime will refuse in its own row
        return None
