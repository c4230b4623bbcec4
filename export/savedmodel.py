"""A TensorFlow SavedModel folder as a Keras model export can convert: an inference-only layer around its serving
signature (``keras.layers.TFSMLayer``), on a fixed-size image input read from the signature.

A SavedModel is a TensorFlow program, not data: its graph may hold operators that read or write files or call
Python. Before TensorFlow loads it, its ``saved_model.pb`` is parsed as a protocol buffer (nothing runs) and the
folder is refused in one line when an operator that reaches outside the graph is in it (:data:`OUTSIDE`), or when
a checkpoint operator (:data:`CHECKPOINT`, which every SavedModel's own save and restore functions carry) is in the
serving signature or the initialisation that loading runs. That narrows, not removes, the trust a SavedModel needs:
export only SavedModels you would run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecifar.errors import ModelError, one_line

PROTO = "saved_model.pb"
SIGNATURE = "serving_default"
INIT_OP = "__saved_model_init_op"
MAX_PROTO_BYTES = 1 << 30  # a graph beyond 1 GiB is no edge classifier; protobuf refuses 2 GiB anyway
#: Operator name parts that reach outside the graph: Python, files, readers, datasets, summaries, printing, devices.
OUTSIDE = ("PyFunc", "File", "Reader", "Dataset", "Summary", "Print", "Debug", "ImmutableConst", "Iterator",
           "Send", "Recv", "Remote", "Collective", "LoadAndRemap")
#: Checkpoint operators: in the library's save/restore functions of every SavedModel, refused on the serving path.
CHECKPOINT = ("Save", "Restore", "MergeV2Checkpoints", "ShardedFilename")


@dataclass(frozen=True)
class Signature:
    """The serving signature's one input and one output: names, the input's dtype and shape (None: open)."""

    input_name: str
    output_name: str
    dtype: int                            # a TensorFlow DataType enum value (1 = float32)
    shape: tuple[int | None, ...] | None  # None: unknown rank


def is_savedmodel(path: Path) -> bool:
    return path.is_dir() and (path / PROTO).is_file()


def read_proto(folder: Path):
    """The parsed ``saved_model.pb`` (parsing runs nothing), or one ModelError line."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto_path = folder / PROTO
    try:
        if proto_path.stat().st_size > MAX_PROTO_BYTES:
            raise ValueError(f"{PROTO} is larger than {MAX_PROTO_BYTES >> 20} MiB")
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString(proto_path.read_bytes())
    except Exception as exc:  # OSError, DecodeError
        raise ModelError(f"{folder}: not a readable SavedModel ({one_line(exc)})") from None
    if not proto.meta_graphs:
        raise ModelError(f"{folder}: not a readable SavedModel (no graph in {PROTO})")
    return proto


def signature(folder: Path, proto) -> Signature:
    """The ``serving_default`` signature's input and output, or one line: none, or several inputs or outputs."""
    graph = proto.meta_graphs[0]
    if SIGNATURE not in graph.signature_def:
        raise ModelError(f"{folder}: no {SIGNATURE!r} signature (it has {', '.join(graph.signature_def) or 'none'}); "
                         "export the model with model.export(DIR) or tf.saved_model.save")
    sig = graph.signature_def[SIGNATURE]
    if len(sig.inputs) != 1 or len(sig.outputs) != 1:
        raise ModelError(f"{folder}: {len(sig.inputs)} inputs and {len(sig.outputs)} outputs; edgecifar exports an "
                         "image classifier: one image input [N, H, W, C] and one output of class scores [N, classes]")
    (input_name, tensor), = sig.inputs.items()
    (output_name, _), = sig.outputs.items()
    shape = None if tensor.tensor_shape.unknown_rank else tuple(
        d.size if d.size > 0 else None for d in tensor.tensor_shape.dim)
    return Signature(input_name, output_name, int(tensor.dtype), shape)


def _node(name: str) -> str:
    """A graph input reference (``^ctrl``, ``node:1``, ``node:out:0``) as the node's name."""
    return name.lstrip("^").split(":")[0]


def _functions_called(node) -> list[str]:
    """The library functions a node calls (its func and list-of-func attributes: PartitionedCall, If, While...)."""
    names = []
    for attr in node.attr.values():
        if attr.HasField("func"):
            names.append(attr.func.name)
        names += [f.name for f in attr.list.func]
    return names


def serving_ops(proto) -> set[str]:
    """The operators the serving signature and loading's initialisation can run: the graph's nodes they depend on,
    and every node of every function those call (transitively)."""
    graph = proto.meta_graphs[0]
    nodes = {n.name: n for n in graph.graph_def.node}
    library = {f.signature.name: f for f in graph.graph_def.library.function}
    wanted = [t.name for key in (SIGNATURE, INIT_OP) if key in graph.signature_def
              for t in graph.signature_def[key].outputs.values()]
    stack, seen, functions, ops = [_node(n) for n in wanted], set(), [], set()
    while stack:
        name = stack.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        ops.add(nodes[name].op)
        stack += [_node(i) for i in nodes[name].input]
        functions += _functions_called(nodes[name])
    done = set()
    while functions:
        fname = functions.pop()
        if fname in done or fname not in library:
            continue
        done.add(fname)
        for node in library[fname].node_def:
            ops.add(node.op)
            functions += _functions_called(node)
    return ops


def all_ops(proto) -> set[str]:
    graph = proto.meta_graphs[0].graph_def
    return {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}


def refused_ops(proto) -> list[str]:
    """The operators that make export refuse this SavedModel (module docstring); empty when none."""
    def checkpoint(op: str) -> bool:
        return any(part in op for part in CHECKPOINT)

    outside = {op for op in all_ops(proto) if any(part in op for part in OUTSIDE) and not checkpoint(op)}
    return sorted(outside | {op for op in serving_ops(proto) if checkpoint(op)})


def load(folder: Path):
    """The SavedModel as a keras.Model ``[N, H, W, C] -> [N, classes]`` around its serving signature (checked
    first: readable, one input and one output, no operator that reaches outside the graph)."""
    proto = read_proto(folder)
    refused = refused_ops(proto)
    if refused:
        raise ModelError(f"{folder}: its graph has operators that reach outside it ({', '.join(refused[:5])}); "
                         "edgecifar does not run them. Export the model as a .keras file instead")
    sig = signature(folder, proto)
    if sig.shape is None:
        raise ModelError(f"{folder}: its input has no known rank; an image classifier takes [N, H, W, C]")
    if sig.dtype != 1:  # DT_FLOAT
        raise ModelError(f"{folder}: its input is not float32 (TensorFlow dtype {sig.dtype}); edgecifar exports "
                         "models that take float pixels")
    import keras

    layer = _serving_layer(str(folder), sig)
    inp = keras.Input(shape=sig.shape[1:], dtype="float32", name="image")
    return keras.Model(inp, layer(inp), name=folder.name)


def _serving_layer(folder: str, sig: Signature):
    """keras.layers.TFSMLayer on the serving signature, whose output (a dict of one tensor) it unwraps."""
    import keras

    class ServingLayer(keras.layers.TFSMLayer):
        def call(self, inputs, training=False, **kwargs):
            out = self.call_endpoint_fn(**{sig.input_name: inputs})
            return out[sig.output_name] if isinstance(out, dict) else out

    try:
        return ServingLayer(folder, call_endpoint=SIGNATURE, trainable=False, name="savedmodel")
    except Exception as exc:  # TensorFlow's loader raises many types on a damaged folder
        raise ModelError(f"{folder}: not a loadable SavedModel ({one_line(exc)})") from None
