"""A teacher trained in PyTorch: its ``state_dict`` as the Flax variables of a registry model.

Tensors are matched by their PyTorch names in the published layouts below, never by their
order, and every variable of the Flax model (``jax.eval_shape`` of its ``init``) must get
exactly one tensor of the right shape, so nothing is left at its initial value. A
``state_dict`` of another architecture is a ``UserError`` naming the first tensor that does
not fit (an unexpected or missing name, or a shape with both shapes).

Layouts (``<m>`` a module name; each Conv2d has ``<m>.weight`` (+ ``<m>.bias`` in LeNet),
each Linear ``<m>.weight``/``<m>.bias``, each BatchNorm2d ``<m>.weight``, ``.bias``,
``.running_mean``, ``.running_var`` and an ignored ``.num_batches_tracked``):

* ``lenet5``, ``lenet5_half``: DAFL's / DFAD's ``LeNet5`` / ``LeNet5Half`` (HantingChen/DAFL
  ``lenet.py``): ``conv1, conv2, conv3, fc1, fc2``. Fast-Datafree's Sequential version
  (``features.0, features.3, features.6, fc.0, fc.2``) is recognised too.
* ``lenet5_bn``, ``lenet5_half_bn`` (ours; no public layout has BatchNorm in LeNet-5):
  ``conv1, bn1, conv2, bn2, conv3, bn3, fc1, fc2``, each BN after its convolution and
  before the ReLU and the max-pooling.
* ``resnet18``, ``resnet34``: DAFL's / DFAD's / CMI's (zju-vipa/Fast-Datafree
  ``resnet.py``) CIFAR ResNet: ``conv1, bn1, layer{1-4}.{j}.{conv1,bn1,conv2,bn2}``, the 1x1
  shortcut ``layer{2-4}.0.shortcut.0`` (conv) and ``.shortcut.1`` (BN), and ``linear``.
* ``resnet20``, ``resnet110``: RepDistiller's / CMI's CIFAR ResNet (Fast-Datafree
  ``resnet_tiny.py``): ``conv1, bn1, layer{1-3}.{j}.{conv1,bn1,conv2,bn2}``, the 1x1 shortcut
  ``layer{2,3}.0.downsample.0``/``.downsample.1``, and ``fc``. He et al.'s original option-A
  shortcut (zero-padded identity, no parameters) is a different function and is refused.
* ``wrn16_1`` ... ``wrn40_2``: the Wide ResNet of ZSKT / CMI (Fast-Datafree ``wresnet.py``):
  ``conv1, block{1-3}.layer.{j}.{bn1,conv1,bn2,conv2}``, ``convShortcut`` where a block
  changes width or stride, then ``bn1`` and ``fc``.
* ``resnet18_imagenet``, ``resnet34_imagenet``, ``resnet50_imagenet``: torchvision's
  ``resnet18/34/50`` (``torchvision/models/resnet.py``): ``conv1, bn1,
  layer{1-4}.{j}.{conv1,bn1,conv2,bn2}`` (and ``conv3, bn3`` in ResNet-50's Bottleneck), the 1x1
  projection ``layer{i}.0.downsample.0`` (conv) and ``.downsample.1`` (BN), and ``fc``.
* ``mobilenet_v2``, ``mobilenet_v2_050``, ``mobilenet_v2_035``: torchvision's ``mobilenet_v2``
  (``width_mult`` 1.0, 0.5, 0.35; ``torchvision/models/mobilenetv2.py``): the stem
  ``features.0.{0,1}``; blocks ``features.{1-17}.conv.*`` (``conv.0.{0,1}`` the 1x1 expansion,
  ``conv.1.{0,1}`` the depthwise convolution, ``conv.2`` the projection, ``conv.3`` its BN;
  block 1 has no expansion, so its depthwise pair is ``conv.0`` and its projection ``conv.1,
  conv.2``); ``features.18.{0,1}``; the classifier ``classifier.1``.

Conv kernels go from OIHW to HWIO, Linear weights from (out, in) to (in, out); BN ``weight,
bias, running_mean, running_var`` become ``scale, bias`` (params) and ``mean, var``
(batch_stats). A ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix on every
name is dropped.

PyTorch stays optional: only ``read_state_dict`` imports it, to read a ``.pt``/``.pth`` file.
"""

import functools
import hashlib
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ddad_jax import data, models
from ddad_jax.errors import UserError

CONV, DENSE, BN = "conv", "dense", "bn"
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile
_WRAPPERS = ("state_dict", "model")  # {"state_dict": ..., "epoch": ...} training checkpoints
_IGNORED_SUFFIX = ".num_batches_tracked"

# One layer of the layout: (PyTorch module name, path of the Flax module, CONV | DENSE | BN).
Layer = Tuple[str, Tuple[str, ...], str]
# One tensor: PyTorch name -> (Flax collection, path of the leaf, CONV | DENSE | BN, PyTorch shape).
Tensor = Tuple[str, Tuple[str, ...], str, Tuple[int, ...]]


def _lenet_layers(model, params, sequential) -> Iterator[Layer]:
    sequential = sequential and not model.use_bn  # Fast-Datafree's LeNet-5 has no BatchNorm
    convs = ("features.0", "features.3", "features.6") if sequential else ("conv1", "conv2", "conv3")
    for i, conv in enumerate(convs):
        yield conv, (f"Conv_{i}",), CONV
        if model.use_bn:
            yield f"bn{i + 1}", (f"BatchNorm_{i}",), BN
    for i, fc in enumerate(("fc.0", "fc.2") if sequential else ("fc1", "fc2")):
        yield fc, (f"Dense_{i}",), DENSE


def _resnet_layers(model, params, sequential) -> Iterator[Layer]:
    # ResNet-18/34 follow DAFL's names, ResNet-20/110 RepDistiller's: the same BasicBlock.
    shortcut, head = ("downsample", "fc") if len(model.stage_sizes) == 3 else ("shortcut", "linear")
    yield "conv1", ("Conv_0",), CONV
    yield "bn1", ("BatchNorm_0",), BN
    k = 0
    for i, blocks in enumerate(model.stage_sizes):
        for j in range(blocks):
            block, name = f"BasicBlock_{k}", f"layer{i + 1}.{j}"
            yield f"{name}.conv1", (block, "Conv_0"), CONV
            yield f"{name}.bn1", (block, "BatchNorm_0"), BN
            yield f"{name}.conv2", (block, "Conv_1"), CONV
            yield f"{name}.bn2", (block, "BatchNorm_1"), BN
            if "Conv_2" in params[block]:  # the 1x1 projection where width or stride change
                yield f"{name}.{shortcut}.0", (block, "Conv_2"), CONV
                yield f"{name}.{shortcut}.1", (block, "BatchNorm_2"), BN
            k += 1
    yield head, ("Dense_0",), DENSE


def _wrn_layers(model, params, sequential) -> Iterator[Layer]:
    yield "conv1", ("Conv_0",), CONV
    n = (model.depth - 4) // 6
    for i in range(3):
        for j in range(n):
            block, name = f"WideBlock_{i * n + j}", f"block{i + 1}.layer.{j}"
            yield f"{name}.bn1", (block, "BatchNorm_0"), BN
            yield f"{name}.conv1", (block, "Conv_0"), CONV
            yield f"{name}.bn2", (block, "BatchNorm_1"), BN
            yield f"{name}.conv2", (block, "Conv_1"), CONV
            if "Conv_2" in params[block]:
                yield f"{name}.convShortcut", (block, "Conv_2"), CONV
    yield "bn1", ("BatchNorm_0",), BN
    yield "fc", ("Dense_0",), DENSE


def _torchvision_resnet_layers(model, params, sequential) -> Iterator[Layer]:
    yield "conv1", ("Conv_0",), CONV
    yield "bn1", ("BatchNorm_0",), BN
    block_type, convs = ("Bottleneck", 3) if model.bottleneck else ("BasicBlock", 2)
    k = 0
    for i, blocks in enumerate(model.stage_sizes):
        for j in range(blocks):
            block, name = f"{block_type}_{k}", f"layer{i + 1}.{j}"
            for c in range(convs):
                yield f"{name}.conv{c + 1}", (block, f"Conv_{c}"), CONV
                yield f"{name}.bn{c + 1}", (block, f"BatchNorm_{c}"), BN
            if f"Conv_{convs}" in params[block]:  # the 1x1 projection where width or stride change
                yield f"{name}.downsample.0", (block, f"Conv_{convs}"), CONV
                yield f"{name}.downsample.1", (block, f"BatchNorm_{convs}"), BN
            k += 1
    yield "fc", ("Dense_0",), DENSE


def _mobilenet_v2_layers(model, params, sequential) -> Iterator[Layer]:
    yield "features.0.0", ("Conv_0",), CONV
    yield "features.0.1", ("BatchNorm_0",), BN
    k = 0
    while f"InvertedResidual_{k}" in params:
        block, name = f"InvertedResidual_{k}", f"features.{k + 1}.conv"
        # with expansion: conv.0 (1x1) and conv.1 (depthwise) are conv+BN pairs, then conv.2, conv.3;
        # without (the first block): conv.0 (depthwise) is a pair, then conv.1, conv.2
        pairs = 2 if "Conv_2" in params[block] else 1
        for c in range(pairs):
            yield f"{name}.{c}.0", (block, f"Conv_{c}"), CONV
            yield f"{name}.{c}.1", (block, f"BatchNorm_{c}"), BN
        yield f"{name}.{pairs}", (block, f"Conv_{pairs}"), CONV
        yield f"{name}.{pairs + 1}", (block, f"BatchNorm_{pairs}"), BN
        k += 1
    yield f"features.{k + 1}.0", ("Conv_1",), CONV
    yield f"features.{k + 1}.1", ("BatchNorm_1",), BN
    yield "classifier.1", ("Dense_0",), DENSE


_LAYOUTS = {models.LeNet5: _lenet_layers, models.CifarResNet: _resnet_layers, models.WideResNet: _wrn_layers,
            models.ResNet: _torchvision_resnet_layers, models.MobileNetV2: _mobilenet_v2_layers}


def _torch_shape(kind: str, flax_shape: Tuple[int, ...]) -> Tuple[int, ...]:
    if kind == CONV and len(flax_shape) == 4:  # HWIO -> OIHW
        return (flax_shape[3], flax_shape[2], flax_shape[0], flax_shape[1])
    if kind == DENSE and len(flax_shape) == 2:  # (in, out) -> (out, in)
        return (flax_shape[1], flax_shape[0])
    return tuple(flax_shape)


def _lookup(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def expected_tensors(model_name: str, dataset: str, names=(), image_size: Optional[int] = None) -> Dict[str, Tensor]:
    """The PyTorch tensors a ``model_name`` for ``dataset`` (at ``image_size``, default the
    dataset's) is made of, in the layout's order: name -> (Flax collection, leaf path, kind,
    PyTorch shape). ``names`` (the state_dict's) only choose between two layouts of one
    architecture (LeNet-5's named or Sequential)."""
    return dict(_expected(model_name, dataset, any(n.startswith("features.") for n in names), image_size))


@functools.lru_cache(maxsize=None)
def _expected(model_name: str, dataset: str, sequential: bool, image_size: Optional[int]) -> Dict[str, Tensor]:
    spec = data.get_spec(dataset)
    size = image_size or spec.image_size
    model = models.get_classifier(model_name, spec.num_classes)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, spec.channels)))
    params, stats = shapes["params"], shapes.get("batch_stats", {})
    out: Dict[str, Tensor] = {}
    for torch_name, path, kind in _LAYOUTS[type(model)](model, params, sequential):
        module = _lookup(params, path)
        leaves = ([("weight", "params", "scale"), ("bias", "params", "bias"),
                   ("running_mean", "batch_stats", "mean"), ("running_var", "batch_stats", "var")]
                  if kind == BN else [("weight", "params", "kernel"), ("bias", "params", "bias")])
        for suffix, collection, leaf in leaves:
            tree = module if collection == "params" else _lookup(stats, path)
            if leaf in tree:  # convolutions without bias have none
                out[f"{torch_name}.{suffix}"] = (collection, path + (leaf,), kind,
                                                  _torch_shape(kind, tree[leaf].shape))
    # Every Flax variable gets a tensor: a layout that missed one would leave it uninitialised.
    mapped = {(c,) + p for c, p, _, _ in out.values()}
    for key_path, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        full = tuple(k.key for k in key_path)
        if full not in mapped:
            raise RuntimeError(f"the PyTorch layout of '{model_name}' has no tensor for {'/'.join(full)}")
    return out


def _strip_prefixes(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    keys = list(state_dict)
    for prefix in _PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return _strip_prefixes({k[len(prefix):]: v for k, v in state_dict.items()})
    return dict(state_dict)


def _first_misfit(state_dict: Mapping[str, np.ndarray], expected: Dict[str, Tensor]) -> Optional[str]:
    """The first tensor that does not fit, in the state_dict's order (then a missing one in
    the layout's order), as a phrase; None when all fit."""
    for name, value in state_dict.items():
        if name.endswith(_IGNORED_SUFFIX):
            continue
        if name not in expected:
            return f"unexpected tensor {name} {tuple(np.shape(value))}"
        want = expected[name][3]
        if tuple(np.shape(value)) != want:
            return f"{name} has shape {tuple(np.shape(value))}, expected {want}"
    for name, (_, _, _, shape) in expected.items():
        if name not in state_dict:
            return f"missing tensor {name} {shape}"
    return None


def _also_fits(state_dict, model_name: str, dataset: str, image_size: Optional[int] = None) -> List[str]:
    """What else this state_dict fits, for the error message: other registry models for
    ``dataset``, or ``model_name`` for another dataset (classes and input channels differ)."""
    fits = [repr(other) for other in models.CLASSIFIERS if other != model_name
            and _first_misfit(state_dict, expected_tensors(other, dataset, state_dict, image_size)) is None]
    fits += [f"'{model_name}' for {other}" for other in sorted(data.DATASETS) if other != dataset
             and _first_misfit(state_dict, expected_tensors(model_name, other, state_dict)) is None]
    return fits


# torchvision's classifiers that import, as registry models
TORCHVISION_MODELS = {"resnet18": "resnet18_imagenet", "resnet34": "resnet34_imagenet",
                      "resnet50": "resnet50_imagenet", "mobilenet_v2": "mobilenet_v2"}
_RESNET_DEPTHS = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34",
                  ((3, 4, 6, 3), True): "resnet50", ((3, 4, 23, 3), True): "resnet101",
                  ((3, 8, 36, 3), True): "resnet152"}


def torchvision_model(state_dict: Mapping[str, Any]) -> Optional[str]:
    """The torchvision classifier whose key layout ``state_dict`` has (e.g. 'resnet101',
    'mobilenet_v3_small', 'vgg16'), or None: for the error message when it is not one that
    imports."""
    names = set(state_dict)
    shape = lambda n: tuple(np.shape(state_dict[n])) if n in names else None
    if {"conv1.weight", "layer1.0.conv1.weight", "fc.weight"} <= names:
        blocks = tuple(len({n.split(".")[1] for n in names if n.startswith(f"layer{i}.")}) for i in range(1, 5))
        bottleneck = "layer1.0.conv3.weight" in names
        name = _RESNET_DEPTHS.get((blocks, bottleneck))
        conv2 = shape("layer1.0.conv2.weight")
        if name and bottleneck and conv2 and conv2[1] != conv2[0]:
            return name.replace("resnet", "resnext")  # grouped 3x3 convolutions
        if name and bottleneck and conv2 and conv2[0] != 64:
            return "wide_" + name + "_2"
        return name
    if "features.1.conv.0.0.weight" in names and "classifier.1.weight" in names:
        return "mobilenet_v2"
    if "features.1.block.0.0.weight" in names:
        return "mobilenet_v3_large" if "features.16.0.weight" in names else "mobilenet_v3_small"
    if "features.1.0.block.0.0.weight" in names:
        return "an efficientnet"
    if any(n.startswith("features.denseblock1.") for n in names):
        return "a densenet"
    if "classifier.6.weight" in names and "features.0.weight" in names:
        return "a vgg"
    return None


def convert_state_dict(state_dict: Mapping[str, Any], model_name: str, dataset: str,
                       image_size: Optional[int] = None) -> Dict[str, Any]:
    """The Flax variables ``{"params", "batch_stats"}`` of registry model ``model_name`` (for
    ``dataset``: classes, channels, and ``image_size``, default the dataset's: LeNet-5's dense
    layers depend on it) from a PyTorch ``state_dict`` in its layout
    (see the module docstring): a mapping of names to arrays (numpy, or anything
    ``np.asarray`` takes, CPU torch tensors included). UserError naming the first tensor
    that does not fit."""
    if model_name not in models.CLASSIFIERS:
        models.get_classifier(model_name, 10)  # the registry's error, with the known names
    state_dict = _strip_prefixes(state_dict)
    arrays = {}
    for name, value in state_dict.items():
        if not isinstance(name, str) or not hasattr(value, "shape"):
            raise UserError(f"state_dict entry {name!r} is a {type(value).__name__}, not a tensor")
        arrays[name] = value
    expected = expected_tensors(model_name, dataset, arrays, image_size)
    misfit = _first_misfit(arrays, expected)
    if misfit:
        fits = _also_fits(arrays, model_name, dataset, image_size)
        hint = f" (it fits {', '.join(fits)})" if fits else ""
        if not fits and model_name in ("resnet20", "resnet110") and not any(
                ".downsample." in n or ".shortcut." in n for n in arrays):
            hint = ("; ddad_jax's resnet20/resnet110 have 1x1-convolution shortcuts (layerN.0.downsample.*, "
                    "as in RepDistiller/CMI): He et al.'s parameter-free option-A shortcut is not supported")
        guess = torchvision_model(arrays)
        if guess and guess not in TORCHVISION_MODELS:
            hint = (f"; it looks like torchvision's {guess}, which ddad_jax does not import (it imports "
                    f"{', '.join(TORCHVISION_MODELS)})")
        raise UserError(f"state_dict does not fit '{model_name}': {misfit}{hint}")
    variables: Dict[str, Any] = {"params": {}, "batch_stats": {}}
    for name, (collection, path, kind, _) in expected.items():
        value = np.asarray(arrays[name], dtype=np.float32)
        if kind == CONV and value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        elif kind == DENSE and value.ndim == 2:
            value = value.T
        node = variables[collection]
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = np.ascontiguousarray(value)
    if not variables["batch_stats"]:
        del variables["batch_stats"]
    return variables


def _unwrap(obj: Any, path: str) -> Mapping[str, Any]:
    """The state_dict inside what a file holds: itself, or under "state_dict" / "model"."""
    while isinstance(obj, Mapping):
        values = list(obj.values())
        if values and all(hasattr(v, "shape") for v in values):
            return obj
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            keys = ", ".join(map(str, list(obj)[:6])) or "none"
            raise UserError(f"{path} holds a dict that is not a state_dict (keys: {keys}); save "
                            "model.state_dict(), alone or as {'state_dict': ...}")
        obj = inner
    raise UserError(f"{path} holds a {type(obj).__name__}, not a state_dict; save model.state_dict()")


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
    """The state_dict saved in ``path`` as numpy float32/int arrays.

    ``.safetensors`` files are read with the safetensors package. Anything else is read with
    ``torch.load(path, map_location="cpu", weights_only=True)``: a ``.pt`` file is a pickle,
    and unpickling an untrusted one can run arbitrary code; ``weights_only`` restricts it to
    tensors and plain containers. A file that needs more (a whole pickled ``nn.Module``) is
    refused: save ``model.state_dict()`` instead.
    """
    if not os.path.isfile(path):
        raise UserError(f"no state_dict file {path}")
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise UserError(f"reading {path} needs the safetensors package: pip install safetensors") from None
        try:
            return dict(load_file(path))
        except Exception as e:  # pylint: disable=broad-except
            raise UserError(f"cannot read {path} as safetensors ({_reason(e)})") from None
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise UserError(f"reading {path} needs PyTorch: pip install 'ddad_jax[torch]' "
                        "(or save it as .safetensors)") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pylint: disable=broad-except
        raise UserError(f"cannot read {path} with torch.load(weights_only=True) ({_reason(e)}); "
                        "save model.state_dict() rather than the model") from None
    state_dict = _unwrap(obj, path)
    return {k: (v.detach().float() if v.is_floating_point() else v.detach()).numpy()
            for k, v in state_dict.items()}


def _reason(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:160]}" if first else type(e).__name__


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
