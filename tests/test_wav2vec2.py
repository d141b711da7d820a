"""Tests for the wav2vec 2.0 feature encoder and its checkpoint loader.

The reference below is an independent NumPy version of the same conv stack (not
the Keras code), and checkpoints are written with random weights into tmp_path:
nothing is downloaded.
"""

from __future__ import annotations

import collections
import math
import pickle
import sys
import zipfile

import keras
import numpy as np
import pytest
from keras import layers
from safetensors.numpy import save_file
from scipy.special import erf

from sincnet_keras import build_wav2vec2_feature_encoder, load_wav2vec2_feature_encoder
from sincnet_keras.wav2vec2 import frame_geometry, num_frames
from sincnet_keras.wav2vec2_checkpoint import read_checkpoint, wav2vec2_feature_encoder_weights

SAMPLE_RATE = 16000
KERNELS = (10, 3, 3, 3, 3, 2, 2)
STRIDES = (5, 2, 2, 2, 2, 2, 2)
CHANNELS = 512


def _noise(batch, samples, seed=0):
    return np.random.default_rng(seed).normal(0.0, 0.1, (batch, samples, 1)).astype("float32")


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _random_weights(norm, conv_bias=False, seed=0):
    """Feature-encoder tensors in PyTorch naming and layout, `(out, in, kernel)`."""
    rng = np.random.default_rng(seed)
    weights = {}
    in_channels = 1
    for index, kernel in enumerate(KERNELS):
        key = f"feature_extractor.conv_layers.{index}"
        scale = 1.6 / math.sqrt(in_channels * kernel)  # keeps activations near unit scale through GELU
        weights[f"{key}.conv.weight"] = rng.normal(0.0, scale, (CHANNELS, in_channels, kernel)).astype("float32")
        if conv_bias:
            weights[f"{key}.conv.bias"] = rng.normal(0.0, 0.1, CHANNELS).astype("float32")
        if norm == "layer" or index == 0:
            weights[f"{key}.layer_norm.weight"] = rng.normal(1.0, 0.2, CHANNELS).astype("float32")
            weights[f"{key}.layer_norm.bias"] = rng.normal(0.0, 0.2, CHANNELS).astype("float32")
        in_channels = CHANNELS
    return weights


def _reference_encoder(waveform, weights, norm, epsilon=1e-5):
    """NumPy float64 wav2vec 2.0 feature encoder: `(batch, samples, 1)` -> `(batch, frames, 512)`."""
    x = waveform.astype("float64")
    for index, (kernel, stride) in enumerate(zip(KERNELS, STRIDES)):
        key = f"feature_extractor.conv_layers.{index}"
        windows = np.lib.stride_tricks.sliding_window_view(x, kernel, axis=1)[:, ::stride]  # (batch, frames, in, k)
        x = np.tensordot(windows, weights[f"{key}.conv.weight"].astype("float64"), axes=([2, 3], [1, 2]))
        if f"{key}.conv.bias" in weights:
            x = x + weights[f"{key}.conv.bias"]
        if (norm == "group" and index == 0) or norm == "layer":
            # GroupNorm with one group per channel normalises over time; LayerNorm over channels.
            axis = 1 if norm == "group" else 2
            mean = x.mean(axis=axis, keepdims=True)
            variance = x.var(axis=axis, keepdims=True)
            x = (x - mean) / np.sqrt(variance + epsilon)
            x = x * weights[f"{key}.layer_norm.weight"] + weights[f"{key}.layer_norm.bias"]
        x = 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))  # exact GELU
    return x


@pytest.fixture(scope="module")
def group_encoder():
    return build_wav2vec2_feature_encoder("group")


# --- the architecture ---------------------------------------------------------------------------


def test_frame_geometry_is_20ms_hop_25ms_field():
    assert frame_geometry() == (400, 320)
    assert num_frames(399) == 0
    assert num_frames(400) == 1
    for samples in range(400, 5000, 37):
        length = samples
        for kernel, stride in zip(KERNELS, STRIDES):
            length = (length - kernel) // stride + 1
        assert num_frames(samples) == length == (samples - 400) // 320 + 1


@pytest.mark.parametrize("seconds", [1.0, 5.13])
def test_output_frames(group_encoder, seconds):
    samples = int(round(seconds * SAMPLE_RATE))
    output = _numpy(group_encoder(_noise(1, samples)))
    expected_frames = (samples - 400) // 320 + 1
    assert output.shape == (1, expected_frames, CHANNELS)
    assert expected_frames == {1.0: 49, 5.13: 256}[seconds]
    assert np.all(np.isfinite(output))


def test_waveform_without_channel_axis(group_encoder):
    waveform = _noise(2, 4000)
    np.testing.assert_allclose(
        _numpy(group_encoder(waveform[..., 0])), _numpy(group_encoder(waveform)), atol=1e-6
    )


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_layers(norm):
    model = build_wav2vec2_feature_encoder(norm)
    assert model.name == "wav2vec2_feature_encoder"
    assert model.input_shape == (None, None, 1)
    assert model.output_shape == (None, None, CHANNELS)
    for index, (kernel, stride) in enumerate(zip(KERNELS, STRIDES)):
        conv = model.get_layer(f"conv{index}")
        assert (conv.filters, conv.kernel_size, conv.strides, conv.padding) == (CHANNELS, (kernel,), (stride,), "valid")
        assert not conv.use_bias
    norms = [layer for layer in model.layers if layer.name.startswith("norm")]
    if norm == "group":
        assert [layer.name for layer in norms] == ["norm0"]
        assert isinstance(norms[0], layers.GroupNormalization)
        assert norms[0].groups == CHANNELS
    else:
        assert [layer.name for layer in norms] == [f"norm{i}" for i in range(7)]
        assert all(isinstance(layer, layers.LayerNormalization) for layer in norms)
    assert all(layer.epsilon == pytest.approx(1e-5) for layer in norms)
    assert all(layer.center and layer.scale for layer in norms)  # affine


def test_gelu_is_exact_not_tanh(group_encoder):
    x = np.linspace(-4.0, 4.0, 201).astype("float32")
    exact = 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    for index in range(7):
        activation = group_encoder.get_layer(f"gelu{index}")
        # The tanh approximation differs from erf GELU by up to 4.7e-4.
        np.testing.assert_allclose(_numpy(activation(x)), exact, atol=1e-6)


def test_unknown_norm_is_refused():
    with pytest.raises(ValueError, match="batch"):
        build_wav2vec2_feature_encoder("batch")


def test_architecture_arguments():
    model = build_wav2vec2_feature_encoder("layer", conv_dim=(8, 16), conv_kernel=(4, 2), conv_stride=(2, 2))
    assert model.output_shape == (None, None, 16)
    assert _numpy(model(_noise(1, 100))).shape == (1, 24, 16)


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_save_and_reload_gives_identical_outputs(tmp_path, norm):
    model = build_wav2vec2_feature_encoder(norm)
    path = tmp_path / f"wav2vec2_{norm}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    x = _noise(2, 3200, seed=3)
    np.testing.assert_allclose(_numpy(reloaded(x)), _numpy(model(x)), atol=1e-6)
    assert [w.path for w in reloaded.weights] == [w.path for w in model.weights]


# --- checkpoints against the NumPy reference ---------------------------------------------------


@pytest.mark.parametrize(
    "norm, conv_bias, prefix",
    [("group", False, "wav2vec2."), ("group", False, ""), ("layer", False, "wav2vec2."), ("layer", True, "")],
)
def test_safetensors_checkpoint_matches_numpy_reference(tmp_path, norm, conv_bias, prefix):
    weights = _random_weights(norm, conv_bias)
    others = {  # the rest of a checkpoint, which the loader ignores
        "wav2vec2.encoder.layers.0.attention.k_proj.weight": np.ones((4, 4), "float32"),
        "lm_head.bias": np.zeros(3, "float32"),
    }
    path = tmp_path / "model.safetensors"
    save_file({**{prefix + key: value for key, value in weights.items()}, **others}, str(path))

    read = wav2vec2_feature_encoder_weights(path)
    assert read.keys() == weights.keys()
    for key, value in weights.items():
        np.testing.assert_array_equal(read[key], value)

    model = load_wav2vec2_feature_encoder(path)  # variant and bias inferred from the names
    assert [layer.name for layer in model.layers if layer.name.startswith("norm")] == (
        ["norm0"] if norm == "group" else [f"norm{i}" for i in range(7)]
    )
    assert model.get_layer("conv3").use_bias == conv_bias
    waveform = _noise(2, 5000, seed=1)
    reference = _reference_encoder(waveform, weights, norm)
    error = np.abs(_numpy(model(waveform)) - reference).max()
    print(f"max abs error vs NumPy reference ({norm}, {conv_bias=}): {error:.2e}, output std {reference.std():.2f}")
    assert error < 1e-4


def test_float16_checkpoint_is_widened(tmp_path):
    weights = {key: value.astype("float16") for key, value in _random_weights("group").items()}
    path = tmp_path / "model.safetensors"
    save_file(weights, str(path))
    read = wav2vec2_feature_encoder_weights(path)
    assert all(value.dtype == np.float32 for value in read.values())
    model = load_wav2vec2_feature_encoder(path, norm="group")
    kernel = weights["feature_extractor.conv_layers.1.conv.weight"].astype("float32").transpose(2, 1, 0)
    np.testing.assert_array_equal(_numpy(model.get_layer("conv1").kernel), kernel)


# --- torch files, read without torch -----------------------------------------------------------


def _torch_save(torch, weights, path, names):
    """Saves `weights` renamed by `names` with torch.save, with one non-contiguous tensor."""
    state = collections.OrderedDict()
    for key, value in weights.items():
        tensor = torch.from_numpy(value)
        if key.endswith("conv_layers.1.conv.weight"):
            # Stored transposed: the reader must follow the strides.
            tensor = torch.from_numpy(np.ascontiguousarray(value.transpose(2, 1, 0))).permute(2, 1, 0)
            assert not tensor.is_contiguous()
        state[names(key)] = tensor
    state[names("encoder.feature_projection.projection.weight")] = torch.ones(3, 2, dtype=torch.float16)
    torch.save(state, path)


@pytest.mark.parametrize(
    "norm, filename, names",
    [
        ("group", "wav2vec2_fairseq_base_ls960.pth", lambda key: key),  # torchaudio WAV2VEC2_BASE naming
        ("layer", "wav2vec2_large.pt", lambda key: key),
        ("group", "pytorch_model.bin", lambda key: f"wav2vec2.{key}"),  # Hugging Face Wav2Vec2ForCTC naming
    ],
)
def test_torch_checkpoint_is_read_without_torch(tmp_path, monkeypatch, norm, filename, names):
    torch = pytest.importorskip("torch")
    weights = _random_weights(norm, seed=2)
    path = tmp_path / filename
    _torch_save(torch, weights, path, names)

    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "torch", None)  # any `import torch` in the reader would now fail
        read = wav2vec2_feature_encoder_weights(path)
    assert read.keys() == weights.keys()
    for key, value in weights.items():
        np.testing.assert_array_equal(read[key], value)

    model = load_wav2vec2_feature_encoder(path)
    waveform = _noise(1, 4000, seed=4)
    error = np.abs(_numpy(model(waveform)) - _reference_encoder(waveform, weights, norm)).max()
    print(f"max abs error vs NumPy reference ({filename}): {error:.2e}")
    assert error < 1e-4


def _zip_checkpoint(path, pickled, storages=None):
    """A torch.save-style zip archive around raw pickle bytes."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", data)
    return path


@pytest.mark.parametrize(
    "module, name", [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("subprocess", "call")]
)
def test_forbidden_global_is_refused_and_not_run(tmp_path, module, name):
    marker = tmp_path / "ran"
    argument = f"open({str(marker)!r}, 'w')" if name == "eval" else f"touch {marker}"
    if name == "call":
        argument = ["touch", str(marker)]
    # What pickle.dumps writes for an object whose __reduce__ returns (module.name, (argument,)).
    pickled = b"\x80\x02c" + f"{module}\n{name}\n".encode() + pickle.dumps(argument, protocol=2)[2:-1] + b"\x85R."
    path = _zip_checkpoint(tmp_path / "pytorch_model.bin", pickled)
    with pytest.raises(ValueError, match=rf"pytorch_model\.bin.*refused.*{module}\.{name}"):
        wav2vec2_feature_encoder_weights(path)
    assert not marker.exists()


def test_forbidden_global_inside_a_state_dict_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    pickled = pickle.dumps(collections.OrderedDict(weight=Payload()), protocol=2)
    path = _zip_checkpoint(tmp_path / "model.pt", pickled)
    with pytest.raises(ValueError, match="refused to unpickle global"):
        load_wav2vec2_feature_encoder(path)
    assert not marker.exists()


def test_bare_pickle_is_refused_unread(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(Payload(), protocol=2))
    with pytest.raises(ValueError, match="model.pt.*bare pickle"):
        wav2vec2_feature_encoder_weights(path)
    assert not marker.exists()


def test_legacy_torch_format_asks_to_resave(tmp_path):
    path = tmp_path / "old.pt"
    # The start of a pre-1.6 torch.save file: protocol 2, then the pickled magic number.
    path.write_bytes(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19." + bytes(64))
    with pytest.raises(ValueError, match=r"old\.pt.*legacy.*torch >= 1\.6.*safetensors"):
        wav2vec2_feature_encoder_weights(path)


def _tensor_pickle(size, stride):
    """A hand-written torch state dict: {"weight": float tensor of `size`, `stride` on storage "0"}."""

    def ints(values):  # BININT1 opcodes, one per value below 256
        return b"".join(b"K" + bytes([value]) for value in values)

    return (
        b"\x80\x02ccollections\nOrderedDict\n)R(X\x06\x00\x00\x00weightctorch._utils\n_rebuild_tensor_v2\n"
        b"((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ"
        b"K\x00" + ints(size) + b"\x86" + ints(stride) + b"\x86\x89ccollections\nOrderedDict\n)RtRu."
    )


def test_tensor_outside_its_storage_is_refused(tmp_path):
    four_floats = {"0": np.zeros(4, "<f4").tobytes()}
    path = _zip_checkpoint(tmp_path / "short.pt", _tensor_pickle((2, 3), (3, 1)), four_floats)
    with pytest.raises(ValueError, match=r"short\.pt.*outside its storage"):
        read_checkpoint(path)
    # A zero stride could otherwise ask for any amount of memory.
    path = _zip_checkpoint(tmp_path / "huge.pt", _tensor_pickle((255, 255), (0, 0)), four_floats)
    with pytest.raises(ValueError, match=r"huge\.pt.*larger than its storage"):
        read_checkpoint(path)
    # The same record with enough storage reads back, transposed strides included.
    six_floats = {"0": np.arange(6, dtype="<f4").tobytes()}
    path = _zip_checkpoint(tmp_path / "ok.pt", _tensor_pickle((2, 3), (3, 1)), six_floats)
    np.testing.assert_array_equal(read_checkpoint(path)["weight"], np.arange(6, dtype="float32").reshape(2, 3))
    path = _zip_checkpoint(tmp_path / "t.pt", _tensor_pickle((3, 2), (1, 3)), six_floats)
    np.testing.assert_array_equal(read_checkpoint(path)["weight"], np.arange(6, dtype="float32").reshape(2, 3).T)


# --- errors --------------------------------------------------------------------------------------


def _save_safetensors(tmp_path, weights, filename="model.safetensors"):
    path = tmp_path / filename
    save_file(weights, str(path))
    return path


def test_missing_names_are_listed(tmp_path):
    weights = _random_weights("group")
    del weights["feature_extractor.conv_layers.3.conv.weight"]
    del weights["feature_extractor.conv_layers.0.layer_norm.bias"]
    path = _save_safetensors(tmp_path, weights)
    with pytest.raises(ValueError, match=r"missing \['feature_extractor.conv_layers.0.layer_norm.bias', "
                                          r"'feature_extractor.conv_layers.3.conv.weight'\], unexpected \[\]") as info:
        load_wav2vec2_feature_encoder(path)
    assert "\n" not in str(info.value)


def test_unexpected_names_are_listed(tmp_path):
    weights = _random_weights("group")
    weights["feature_extractor.conv_layers.7.conv.weight"] = np.zeros((512, 512, 2), "float32")
    path = _save_safetensors(tmp_path, weights)
    with pytest.raises(ValueError, match=r"unexpected \['feature_extractor.conv_layers.7.conv.weight'\]"):
        load_wav2vec2_feature_encoder(path)


def test_wrong_variant_lists_missing_norms(tmp_path):
    path = _save_safetensors(tmp_path, _random_weights("group"))
    with pytest.raises(ValueError, match=r"norm='layer'.*missing \['feature_extractor.conv_layers.1.layer_norm.bias'"):
        load_wav2vec2_feature_encoder(path, norm="layer")


def test_unknown_norm_is_refused_by_the_loader(tmp_path):
    path = _save_safetensors(tmp_path, _random_weights("group"))
    with pytest.raises(ValueError, match="batch"):
        load_wav2vec2_feature_encoder(path, norm="batch")


def test_wrong_shape_is_named(tmp_path):
    weights = _random_weights("layer")
    weights["feature_extractor.conv_layers.1.conv.weight"] = np.zeros((512, 512, 4), "float32")
    path = _save_safetensors(tmp_path, weights)
    with pytest.raises(
        ValueError,
        match=r"model\.safetensors.*conv_layers\.1\.conv\.weight expected \(512, 512, 3\), found \(512, 512, 4\)",
    ):
        load_wav2vec2_feature_encoder(path)


def test_checkpoint_without_feature_encoder(tmp_path):
    path = _save_safetensors(tmp_path, {"encoder.layer_norm.weight": np.ones(4, "float32")})
    with pytest.raises(ValueError, match="no wav2vec 2.0 feature-encoder tensors"):
        wav2vec2_feature_encoder_weights(path)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.bin"
    text.write_text("not weights\n")
    with pytest.raises(ValueError, match=r"notes\.bin: not a readable checkpoint"):
        load_wav2vec2_feature_encoder(text)

    other_zip = tmp_path / "model.pt"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match=r"model\.pt: not a readable torch checkpoint"):
        load_wav2vec2_feature_encoder(other_zip)

    truncated = _save_safetensors(tmp_path, _random_weights("group"), "cut.safetensors")
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"cut\.safetensors: not a readable safetensors file"):
        load_wav2vec2_feature_encoder(truncated)

    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        load_wav2vec2_feature_encoder(tmp_path / "absent.safetensors")


# --- Hugging Face transformers, when installed --------------------------------------------------


@pytest.mark.parametrize("norm, conv_bias, task_model", [("group", False, False), ("layer", True, True)])
def test_matches_transformers_feature_encoder(tmp_path, norm, conv_bias, task_model):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    # The real feature encoder with a one-layer, 32-wide transformer after it (unused here).
    config = transformers.Wav2Vec2Config(
        feat_extract_norm=norm, conv_bias=conv_bias, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=37, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )
    torch.manual_seed(0)
    model = (transformers.Wav2Vec2ForCTC if task_model else transformers.Wav2Vec2Model)(config).eval()
    backbone = model.wav2vec2 if task_model else model
    with torch.no_grad():
        # Random norm affines, so that their mapping to gamma and beta is tested too.
        for name, parameter in backbone.feature_extractor.named_parameters():
            if "layer_norm" in name or name.endswith("conv.bias"):
                parameter.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
    model.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    assert path.is_file()

    encoder = load_wav2vec2_feature_encoder(path)
    waveform = _noise(2, 6000, seed=5)
    with torch.no_grad():
        expected = backbone.feature_extractor(torch.from_numpy(waveform[..., 0])).numpy().transpose(0, 2, 1)
    output = _numpy(encoder(waveform))
    assert output.shape == expected.shape == (2, num_frames(6000), CHANNELS)
    error = np.abs(output - expected).max()
    print(f"max abs error vs transformers ({norm}, {conv_bias=}): {error:.2e}, output std {expected.std():.2f}")
    assert error < 1e-4
