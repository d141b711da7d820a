"""Pretrained wav2vec 2.0 feature-encoder weights from a checkpoint file.

Reads the weights a user already has on disk (nothing is downloaded):

- a Hugging Face `model.safetensors` (Wav2Vec2Model, Wav2Vec2ForCTC, ...);
- a Hugging Face `pytorch_model.bin`, or a torchaudio `WAV2VEC2_BASE` /
  `WAV2VEC2_LARGE` state dict saved with `torch.save` (`.pt`, `.pth`).

The format is told from the file's first bytes, not its name. Both projects
name the encoder's tensors `feature_extractor.conv_layers.{i}.conv.weight`
(shape `(out, in, kernel)`), `...conv.bias` when the convolutions have a bias,
and `...layer_norm.weight` / `...layer_norm.bias` (shape `(out,)`): on layer 0
only in the base ("group") variant, on every layer in the large ("layer") one.
Hugging Face task models add a prefix such as `wav2vec2.`; any prefix is
accepted. Every other tensor in the checkpoint is ignored.

Torch files are read without torch. Since torch 1.6, `torch.save` writes a zip
archive holding `<name>/data.pkl` (the pickled structure) and
`<name>/data/<key>` (one raw storage per key). The pickle is read by a
restricted unpickler that resolves only the handful of globals a state dict
needs and refuses every other one, so loading a checkpoint cannot run code.
"""

import collections
import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from sincnet_keras.wav2vec2 import (
    CONV_DIM,
    CONV_KERNEL,
    CONV_STRIDE,
    NORM_VARIANTS,
    build_wav2vec2_feature_encoder,
    conv_dims,
)

# A feature-encoder tensor under any model prefix ("", "wav2vec2.", "hubert.", ...).
ENCODER_KEY = re.compile(r"^(?P<prefix>|.*\.)(?P<name>feature_extractor\.conv_layers\..+)$")
CANONICAL_KEY = re.compile(r"^feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)$")

# torch storage classes and the NumPy dtype of their elements (bfloat16 is widened on reading).
STORAGE_DTYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}

# The legacy (pre-1.6) torch.save format starts with this pickled magic number.
LEGACY_TORCH_MAGIC = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def wav2vec2_feature_encoder_weights(path):
    """Reads the feature-encoder tensors of a wav2vec 2.0 checkpoint.

    Args:
        path: a `.safetensors` file, or a torch zip checkpoint (`.bin`, `.pt`,
            `.pth`) holding a state dict, possibly nested in a dict.

    Returns:
        `{name: float32 array}` with names like
        `feature_extractor.conv_layers.0.conv.weight` (the model prefix removed)
        in PyTorch layout: conv weights `(out, in, kernel)`, the rest `(out,)`.
    """
    path = Path(path)
    tensors = read_checkpoint(path, select=lambda name: ENCODER_KEY.match(name) is not None)
    prefixes = sorted({ENCODER_KEY.match(name)["prefix"] for name in tensors})
    if not prefixes:
        raise ValueError(f"{path}: no wav2vec 2.0 feature-encoder tensors (feature_extractor.conv_layers.*)")
    if len(prefixes) > 1:
        raise ValueError(f"{path}: feature encoders under several prefixes {prefixes}; expected one model")
    return {ENCODER_KEY.match(name)["name"]: array.astype("float32") for name, array in tensors.items()}


def load_wav2vec2_feature_encoder(
    path,
    norm=None,
    conv_bias=None,
    conv_dim=CONV_DIM,
    conv_kernel=CONV_KERNEL,
    conv_stride=CONV_STRIDE,
    name="wav2vec2_feature_encoder",
):
    """Builds the feature encoder and sets its weights from a checkpoint.

    Args:
        path: the checkpoint file (see `wav2vec2_feature_encoder_weights`).
        norm: `"group"` or `"layer"`; inferred from the checkpoint when None
            (layer norms beyond layer 0 mean `"layer"`).
        conv_bias: whether the convolutions have a bias; inferred when None.
        conv_dim, conv_kernel, conv_stride: the architecture, as in
            `build_wav2vec2_feature_encoder` (the defaults are those of the
            released base and large models). Shapes are checked against it.
        name: the model's name.

    Returns:
        A `keras.Model` from `(batch, samples, 1)` at 16 kHz to
        `(batch, frames, 512)`, with the checkpoint's weights.
    """
    path = Path(path)
    weights = wav2vec2_feature_encoder_weights(path)
    if norm is None:
        norm = infer_norm(weights)
    elif norm not in NORM_VARIANTS:
        raise ValueError(f"norm must be None or one of {NORM_VARIANTS}, got {norm!r}")
    if conv_bias is None:
        conv_bias = any(key.endswith(".conv.bias") for key in weights)
    expected = expected_shapes(norm, conv_bias, conv_dim, conv_kernel)
    check_weights(weights, expected, source=f"{path} (norm={norm!r}, conv_bias={conv_bias})")
    model = build_wav2vec2_feature_encoder(norm, conv_dim, conv_kernel, conv_stride, conv_bias, name=name)
    set_feature_encoder_weights(model, weights)
    return model


def infer_norm(weights):
    """`"layer"` if a layer after the first has a norm, else `"group"`."""
    keys = (CANONICAL_KEY.match(key) for key in weights)
    layers_with_norm = {int(key[1]) for key in keys if key and key[2] == "layer_norm"}
    return "layer" if layers_with_norm - {0} else "group"


def expected_shapes(norm, conv_bias, conv_dim=CONV_DIM, conv_kernel=CONV_KERNEL):
    """`{name: PyTorch shape}` of every feature-encoder tensor of one variant."""
    dims = conv_dims(conv_dim, len(conv_kernel))
    shapes = {}
    in_channels = 1
    for index, (out_channels, kernel) in enumerate(zip(dims, conv_kernel)):
        key = f"feature_extractor.conv_layers.{index}"
        shapes[f"{key}.conv.weight"] = (out_channels, in_channels, kernel)
        if conv_bias:
            shapes[f"{key}.conv.bias"] = (out_channels,)
        if norm == "layer" or (norm == "group" and index == 0):
            shapes[f"{key}.layer_norm.weight"] = (out_channels,)
            shapes[f"{key}.layer_norm.bias"] = (out_channels,)
        in_channels = out_channels
    return shapes


def check_weights(weights, expected, source="checkpoint"):
    """Raises a one-line ValueError on missing, unexpected or misshapen tensors."""
    missing = sorted(set(expected) - set(weights), key=natural_key)
    unexpected = sorted(set(weights) - set(expected), key=natural_key)
    if missing or unexpected:
        raise ValueError(f"{source}: feature-encoder tensors missing {missing}, unexpected {unexpected}")
    wrong = [
        f"{key} expected {expected[key]}, found {tuple(weights[key].shape)}"
        for key in sorted(expected, key=natural_key)
        if tuple(weights[key].shape) != tuple(expected[key])
    ]
    if wrong:
        raise ValueError(f"{source}: shape mismatch: {'; '.join(wrong)}")


def natural_key(name):
    """Sorts `conv_layers.10` after `conv_layers.9`."""
    return [int(part) if part.isdigit() else part for part in name.split(".")]


def set_feature_encoder_weights(model, weights):
    """Copies PyTorch-named, PyTorch-layout tensors into the Keras layers.

    `conv_layers.{i}.conv` goes to layer `conv{i}` (kernel transposed from
    `(out, in, kernel)` to Keras's `(kernel, in, out)`) and
    `conv_layers.{i}.layer_norm` to layer `norm{i}` (weight -> gamma, bias -> beta).
    """
    for key, array in weights.items():
        index, part, parameter = CANONICAL_KEY.match(key).groups()
        if part == "conv":
            layer = model.get_layer(f"conv{index}")
            variable = layer.kernel if parameter == "weight" else layer.bias
            value = np.transpose(array, (2, 1, 0)) if parameter == "weight" else array
        else:
            layer = model.get_layer(f"norm{index}")
            variable = layer.gamma if parameter == "weight" else layer.beta
            value = array
        variable.assign(value)


def read_checkpoint(path, select=lambda name: True):
    """Reads the tensors whose names `select` accepts: `{name: array}`.

    Nested dicts (e.g. `{"model": state_dict}`) are flattened to dotted names.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    with open(path, "rb") as file:
        head = file.read(16)
    if zipfile.is_zipfile(path):
        return read_torch_zip(path, select)
    if len(head) > 8 and head[8:9] == b"{":
        return read_safetensors(path, select)
    if head[:1] == b"\x80":
        kind = "the legacy (pre-1.6) torch.save format" if LEGACY_TORCH_MAGIC in head else "a bare pickle"
        raise ValueError(
            f"{path}: {kind} is not read; re-save it with torch >= 1.6 "
            "(torch.save(torch.load(path), new_path)) or convert it to safetensors"
        )
    raise ValueError(f"{path}: not a readable checkpoint (neither safetensors nor a torch zip archive)")


def read_safetensors(path, select):
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as file:
            return {name: file.get_tensor(name) for name in file.keys() if select(name)}
    except Exception as error:  # safetensors raises its own SafetensorError and TypeError
        raise ValueError(f"{path}: not a readable safetensors file ({one_line(error)})") from None


# --- torch zip archives, read without torch ---------------------------------------------------


class StorageType(NamedTuple):
    """What the unpickler returns for a global such as `torch.FloatStorage`."""

    name: str
    dtype: str


class Storage(NamedTuple):
    """A raw storage record `<archive>/data/<key>` of `numel` elements."""

    key: str
    dtype: str
    numel: int


class TensorRecord(NamedTuple):
    """A tensor as pickled by torch: a strided view into a storage, read lazily."""

    storage: Storage
    offset: int
    size: tuple
    stride: tuple


def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, *metadata):
    """Stands in for `torch._utils._rebuild_tensor_v2`; checks its arguments."""
    if not isinstance(storage, Storage) or not all(
        isinstance(value, int) for value in (offset, *tuple(size), *tuple(stride))
    ) or len(size) != len(stride):
        raise pickle.UnpicklingError("malformed tensor record")
    return TensorRecord(storage, offset, tuple(size), tuple(stride))


def rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    """Stands in for `torch._utils._rebuild_parameter(_with_state)`: a parameter is its tensor."""
    if not isinstance(data, TensorRecord):
        raise pickle.UnpicklingError("malformed parameter record")
    return data


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
    **{("torch", name): StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global outside `ALLOWED_GLOBALS`."""


class StateDictUnpickler(pickle.Unpickler):
    """Unpickles a torch state dict into `TensorRecord`s, allowing only `ALLOWED_GLOBALS`.

    Any other global (a function, a class, a module attribute) is refused
    before it is looked up, so nothing in the pickle can be called except the
    stand-ins above.
    """

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(
                f"refused to unpickle global {module}.{name} (a state dict holds only tensors and OrderedDicts)"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, StorageType) or not isinstance(key, str) or not isinstance(numel, int):
            raise pickle.UnpicklingError("malformed storage record")
        return Storage(key, storage_type.dtype, numel)


def read_torch_zip(path, select):
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name == "data.pkl" or name.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ValueError("not a torch.save archive (no single data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            byteorder = "little"
            if f"{prefix}byteorder" in archive.namelist():
                byteorder = archive.read(f"{prefix}byteorder").decode("ascii").strip()
            with archive.open(pickles[0]) as file:
                state = StateDictUnpickler(file).load()
            if not isinstance(state, dict):
                raise ValueError(f"holds a {type(state).__name__}, not a state dict")
            return {
                name: read_tensor(archive, prefix, record, byteorder)
                for name, record in flatten(state).items()
                if select(name)
            }
    except RefusedGlobal as error:
        raise ValueError(f"{path}: {error}; the file may be unsafe and was not loaded") from None
    except Exception as error:  # however parsing fails, the file is not a checkpoint we can read
        raise ValueError(f"{path}: not a readable torch checkpoint ({one_line(error)})") from None


def flatten(state, prefix=""):
    """`{"model": {"a.b": t}}` -> `{"model.a.b": t}`, keeping only tensors."""
    tensors = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, TensorRecord):
            tensors[name] = value
        elif isinstance(value, dict):
            tensors.update(flatten(value, prefix=f"{name}."))
    return tensors


def read_tensor(archive, prefix, record, byteorder):
    """Reads one strided tensor from its storage record as a NumPy array."""
    storage = record.storage
    bfloat16 = storage.dtype == "bfloat16"
    dtype = np.dtype("uint16" if bfloat16 else storage.dtype).newbyteorder("<" if byteorder == "little" else ">")
    raw = archive.read(f"{prefix}data/{storage.key}")
    flat = np.frombuffer(raw, dtype=dtype, count=len(raw) // dtype.itemsize)
    if 0 in record.size:
        values = np.zeros(record.size, dtype=dtype)
    else:
        last = record.offset + sum((size - 1) * stride for size, stride in zip(record.size, record.stride))
        if record.offset < 0 or min(record.stride, default=0) < 0 or last >= len(flat):
            raise ValueError(f"tensor outside its storage data/{storage.key}")
        if math.prod(record.size) > len(flat):
            # State-dict tensors never overlap themselves; this also bounds the memory a file can ask for.
            raise ValueError(f"tensor larger than its storage data/{storage.key}")
        view = np.lib.stride_tricks.as_strided(
            flat[record.offset:], shape=record.size, strides=[stride * dtype.itemsize for stride in record.stride]
        )
        values = np.array(view)  # a contiguous copy, independent of the archive's buffer
    values = values.astype(values.dtype.newbyteorder("="))
    if bfloat16:
        # bfloat16 is the top half of a float32.
        values = (values.astype("uint32") << 16).view("float32")
    return values


def one_line(error):
    return " ".join(str(error).split()) or type(error).__name__
