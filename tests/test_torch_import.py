"""A teacher trained in PyTorch, imported: the same logits and BatchNorm statistics as the
PyTorch network in its published layout (ddad_jax/torch_layouts.py), a teacher directory that
``teacher.load_teacher`` reads, and one-line errors naming the first tensor that does not fit."""

import hashlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import torchvision

from ddad_jax import torch_layouts
from conftest import REPO, one_line_error, xla_flags
from ddad_jax import data, models, teacher, torch_import
from ddad_jax.models import bn_stats
from ddad_jax.errors import UserError


def _torch_net(name, dataset, size=32, seed=0):
    spec = data.get_spec(dataset)
    net = torch_layouts.build(name, spec.num_classes, spec.channels)
    return torch_layouts.randomize(net, seed, input_shape=(16, spec.channels, size, size))


def _numpy_state_dict(net):
    return {k: v.detach().numpy() for k, v in net.state_dict().items()}


def _run_cli(*args):
    env = {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": xla_flags()}
    return subprocess.run([sys.executable, "-m", "ddad_jax.import_teacher", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name,dataset,size", [
    ("lenet5_bn", "fashion_mnist", 32), ("lenet5", "fashion_mnist", 32),
    ("resnet18", "cifar10", 8), ("resnet20", "cifar100", 8), ("wrn16_1", "cifar10", 16)])
def test_imported_teacher_computes_what_the_pytorch_one_does(tmp_path, name, dataset, size):
    net = _torch_net(name, dataset, size)
    path = str(tmp_path / "teacher.pt")
    # a training checkpoint as DataParallel leaves it: wrapped, every name prefixed with "module."
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}, "epoch": 7}, path)
    variables = torch_import.convert_state_dict(torch_import.read_state_dict(path), name, dataset)

    spec = data.get_spec(dataset)
    model = models.get_classifier(name, spec.num_classes)
    x = 2.0 * np.random.default_rng(1).normal(size=(4, size, size, spec.channels)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()  # NHWC -> NCHW
    np.testing.assert_allclose(model.apply(variables, x), expected, rtol=1e-4, atol=1e-4)

    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats = jax.tree_util.tree_leaves(variables.get("batch_stats", {}))
    assert len(stats) == 2 * len(bns)
    if bns:  # a statistic in the right place: compare a deep one by name
        last = [k[:-len(".running_var")] for k in net.state_dict() if k.endswith("running_var")][-1]
        want = net.state_dict()[f"{last}.running_var"].numpy()
        assert np.abs(want - 1).max() > 0.05, "the PyTorch statistics should be non-trivial"
        got = [v for v in stats if v.shape == want.shape and np.allclose(v, want)]
        assert got, f"{last}.running_var not among the imported statistics"


def _torchvision_net(name, size, seed=0):
    """torchvision's own network (its key layout, its padding) with random weights and
    non-trivial BatchNorm statistics, 10 classes."""
    torch.manual_seed(seed)
    net = torch_layouts.torchvision_net(name, 10, 3)
    return torch_layouts.randomize(net, seed, passes=2, input_shape=(4, 3, size, size))


@pytest.mark.parametrize("name,size", [
    ("resnet18_imagenet", 64), ("resnet50_imagenet", 64), ("mobilenet_v2_050", 64),
    pytest.param("resnet34_imagenet", 128, marks=pytest.mark.slow),
    pytest.param("mobilenet_v2_050", 128, marks=pytest.mark.slow),
    pytest.param("resnet18_imagenet", 224, marks=pytest.mark.slow),
    pytest.param("mobilenet_v2", 224, marks=pytest.mark.slow)])
def test_torchvision_teacher_imports_with_its_logits_and_statistics(name, size):
    """torchvision's resnet18/34/50 and mobilenet_v2 (two widths) at 64, 128 and 224 pixels:
    the imported network's logits equal PyTorch's, and so does every BatchNorm layer's
    train-mode batch statistics on the same images (what DDAD's BN term compares)."""
    net = _torchvision_net(name, size)
    variables = torch_import.convert_state_dict(_numpy_state_dict(net), name, "cifar10")
    model = models.get_classifier(name, 10)
    x = 1.5 * np.random.default_rng(1).normal(size=(2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(model.apply(variables, x), expected, rtol=1e-4, atol=1e-4)
    # each BN layer's batch mean and variance on x, in PyTorch (forward hooks, by module name)
    # and here (bn_stats, by the Flax path the layout maps that name to)
    torch_stats = {}

    def record(name):
        def hook(module, inputs, output):  # returns None: the output is left as it is
            torch_stats[name] = (inputs[0].mean((0, 2, 3)).numpy(), inputs[0].var((0, 2, 3), unbiased=False).numpy())
        return hook
    hooks = [m.register_forward_hook(record(n)) for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        net(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    for h in hooks:
        h.remove()
    _, ours = bn_stats.apply_with_bn_stats(model, variables, x)
    paths = {n[:-len(".running_mean")]: p[:-1] for n, (_, p, _, _) in
             torch_import.expected_tensors(name, "cifar10").items() if n.endswith(".running_mean")}
    assert set(paths) == set(torch_stats) and len(paths) >= 20
    for torch_name, path in paths.items():
        got = ours
        for key in path:
            got = got[key]
        np.testing.assert_allclose(got["mean"], torch_stats[torch_name][0], rtol=1e-4, atol=1e-4, err_msg=torch_name)
        np.testing.assert_allclose(got["var"], torch_stats[torch_name][1], rtol=1e-4, atol=1e-4, err_msg=torch_name)


@pytest.mark.parametrize("name", ["resnet18_imagenet", "mobilenet_v2_035"])
def test_a_grayscale_torchvision_net_imports_at_its_own_size(name):
    """torchvision's network with a one-channel first convolution (Fashion-MNIST), imported
    at 64x64 (``import_teacher --resize=64``): PyTorch's logits."""
    net = torch_layouts.randomize(torch_layouts.torchvision_net(name, 10, 1), 0, passes=2, input_shape=(4, 1, 64, 64))
    variables = torch_import.convert_state_dict(_numpy_state_dict(net), name, "fashion_mnist", 64)
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 1)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    model = models.get_classifier(name, 10)
    np.testing.assert_allclose(jax.jit(model.apply)(variables, x), expected, rtol=1e-4, atol=1e-4)


def test_unsupported_torchvision_model_is_named_in_one_line():
    resnet101 = _numpy_state_dict(torchvision.models.resnet101(num_classes=10))
    with pytest.raises(UserError, match=r"^state_dict does not fit 'resnet50_imagenet': unexpected tensor "
                                        r"layer3\.6\.conv1\.weight .*torchvision's resnet101, which ddad_jax does "
                                        r"not import \(it imports resnet18, resnet34, resnet50, mobilenet_v2\)"):
        torch_import.convert_state_dict(resnet101, "resnet50_imagenet", "cifar10")
    mnv3 = _numpy_state_dict(torchvision.models.mobilenet_v3_small(num_classes=10))
    with pytest.raises(UserError, match=r"torchvision's mobilenet_v3_small, which ddad_jax does not import"):
        torch_import.convert_state_dict(mnv3, "mobilenet_v2", "cifar10")


def test_lenet5_in_fast_datafree_sequential_layout_is_recognised():
    named = _numpy_state_dict(_torch_net("lenet5", "fashion_mnist"))
    renames = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "fc1": "fc.0", "fc2": "fc.2"}
    sequential = {renames[k.split(".")[0]] + "." + k.split(".")[1]: v for k, v in named.items()}
    a = torch_import.convert_state_dict(named, "lenet5", "fashion_mnist")
    b = torch_import.convert_state_dict(sequential, "lenet5", "fashion_mnist")
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_wrong_architecture_names_the_first_tensor_that_does_not_fit():
    resnet18 = _numpy_state_dict(torch_layouts.build("resnet18"))
    bad = {**resnet18, "layer4.1.conv2.weight": np.zeros((512, 256, 3, 3), np.float32)}
    with pytest.raises(UserError, match=r"^state_dict does not fit 'resnet18': layer4\.1\.conv2\.weight has "
                                        r"shape \(512, 256, 3, 3\), expected \(512, 512, 3, 3\)$"):
        torch_import.convert_state_dict(bad, "resnet18", "cifar10")
    with pytest.raises(UserError, match=r"'resnet34': missing tensor layer1\.2\.conv1\.weight .*it fits 'resnet18'"):
        torch_import.convert_state_dict(resnet18, "resnet34", "cifar10")
    lenet = _numpy_state_dict(torch_layouts.build("lenet5_bn", 10, 1))
    with pytest.raises(UserError, match=r"'lenet5': unexpected tensor bn1\.weight \(6,\) \(it fits 'lenet5_bn'\)"):
        torch_import.convert_state_dict(lenet, "lenet5", "fashion_mnist")
    with pytest.raises(UserError, match=r"conv1\.weight has shape \(6, 1, 5, 5\), expected \(6, 3, 5, 5\) "
                                        r"\(it fits 'lenet5_bn' for fashion_mnist\)"):
        torch_import.convert_state_dict(lenet, "lenet5_bn", "cifar10")
    # He et al.'s option-A ResNet-20 has no shortcut parameters at all
    option_a = {k: v for k, v in _numpy_state_dict(torch_layouts.build("resnet20")).items() if ".downsample." not in k}
    with pytest.raises(UserError, match="missing tensor layer2.0.downsample.0.weight.*option-A"):
        torch_import.convert_state_dict(option_a, "resnet20", "cifar10")


def test_torch_stays_optional(tmp_path, monkeypatch):
    check = ("import sys, ddad_jax.torch_import, ddad_jax.import_teacher, ddad_jax.teacher, ddad_jax.models; "
             "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", check], cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, check=True)
    path = tmp_path / "teacher.pt"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
    with pytest.raises(UserError, match=r"needs PyTorch: pip install 'ddad_jax\[torch\]'"):
        torch_import.read_state_dict(str(path))


def test_unprepared_test_split_gives_a_card_with_null_accuracy_that_load_teacher_accepts(tmp_path):
    from ddad_jax.import_teacher import import_teacher
    path = str(tmp_path / "lenet.pt")
    torch.save(_torch_net("lenet5_bn", "fashion_mnist").state_dict(), path)
    out = str(tmp_path / "out")
    card = import_teacher(path, "lenet5_bn", "fashion_mnist", out, data_dir=str(tmp_path / "no_data"))
    assert card["test_acc"] is None and "not prepared" in card["test_acc_note"]
    _, _, meta = teacher.load_teacher(out, "lenet5_bn", "fashion_mnist")
    assert meta["test_acc"] is None and meta["source"] == "pytorch"


@pytest.mark.slow
def test_cli_writes_a_teacher_that_load_teacher_reads_and_refuses_to_overwrite(tmp_path, fmnist_data_dir):
    net = _torch_net("lenet5_bn", "fashion_mnist")
    path = str(tmp_path / "lenet5_bn.pt")
    torch.save(net.state_dict(), path)
    out = str(tmp_path / "teacher")
    result = _run_cli(f"--state_dict={path}", "--model=lenet5_bn", "--dataset=fashion_mnist", f"--out={out}",
                      f"--data_dir={fmnist_data_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"--config.teacher_dir={out} --config.teacher=lenet5_bn" in result.stdout

    model, variables, card = teacher.load_teacher(out, "lenet5_bn", "fashion_mnist")
    assert card["source"] == "pytorch" and card["model"] == "lenet5_bn" and card["dataset"] == "fashion_mnist"
    assert card["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    # the card's accuracy is the PyTorch net's own on the 10 000 test images (up to a near-tie or two)
    spec = data.get_spec("fashion_mnist")
    images, labels = data.load_split(spec, "test", fmnist_data_dir)
    x_test = np.asarray(data.normalize(images, spec)).transpose(0, 3, 1, 2)
    with torch.no_grad():
        torch_acc = float((net.eval()(torch.from_numpy(x_test)).argmax(-1).numpy() == np.asarray(labels)).mean())
    assert card["test_examples"] == 10000 and card["test_acc"] == pytest.approx(torch_acc, abs=3e-4)
    x = np.random.default_rng(2).normal(size=(3, 32, 32, 1)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(model.apply(variables, x), expected, rtol=1e-4, atol=1e-4)

    before = {f: os.stat(os.path.join(dp, f)).st_mtime_ns for dp, _, fs in os.walk(out) for f in fs}
    card_text = open(os.path.join(out, teacher.TEACHER_META)).read()
    again = _run_cli(f"--state_dict={path}", "--model=lenet5_bn", "--dataset=fashion_mnist", f"--out={out}")
    one_line_error(again, "exists; pass --force")
    assert {f: os.stat(os.path.join(dp, f)).st_mtime_ns for dp, _, fs in os.walk(out) for f in fs} == before
    assert json.loads(open(os.path.join(out, teacher.TEACHER_META)).read()) == json.loads(card_text)


def test_safetensors_file_is_read_without_torch(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    state_dict = _numpy_state_dict(_torch_net("lenet5_bn", "fashion_mnist"))
    path = str(tmp_path / "lenet.safetensors")
    safetensors_numpy.save_file(state_dict, path)
    a = torch_import.convert_state_dict(torch_import.read_state_dict(path), "lenet5_bn", "fashion_mnist")
    b = torch_import.convert_state_dict(state_dict, "lenet5_bn", "fashion_mnist")
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _resized_normalised(images, size=32, mean=0.1307, std=0.3081):
    """What torchvision's Resize(size) + ToTensor() + Normalize(mean, std) give Fashion-MNIST's
    uint8 images (PIL's bilinear upscaling is F.interpolate's with half-pixel centres), NCHW."""
    x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - mean) / std


def test_resize_in_normalize_is_pytorchs_bilinear_resize():
    spec = data.with_preprocessing(data.get_spec("fashion_mnist"), image_size=32, resize=True, mean=(0.1307,),
                                   std=(0.3081,))
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), np.uint8)
    np.testing.assert_allclose(np.asarray(data.normalize(images, spec)).transpose(0, 3, 1, 2),
                               _resized_normalised(images).numpy(), atol=2e-5)


@pytest.mark.slow
def test_teacher_trained_on_its_own_preprocessing_imports_at_its_pytorch_accuracy(tmp_path, fmnist_data_dir):
    """DFAD's Fashion-MNIST LeNet-5 recipe (images resized 28 -> 32, MNIST's 0.1307/0.3081),
    trained here briefly in PyTorch: imported with that preprocessing stated, its accuracy on
    the 10 000 test images is PyTorch's; runs with the teacher take the card's preprocessing."""
    from configs import ddad
    from ddad_jax.trainers.common import dataset_spec
    spec = data.get_spec("fashion_mnist")
    train_x, train_y = data.load_split(spec, "train", fmnist_data_dir, num_examples=6000)
    test_x, test_y = data.load_split(spec, "test", fmnist_data_dir)
    torch.manual_seed(0)
    net = torch_layouts.build("lenet5", 10, 1)
    optimizer = torch.optim.Adam(net.parameters(), 2e-3)
    x, y = _resized_normalised(train_x), torch.from_numpy(train_y).long()
    for epoch in range(2):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(x), 64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[order[i:i + 64]]), y[order[i:i + 64]]).backward()
            optimizer.step()
    with torch.no_grad():
        torch_acc = float((net.eval()(_resized_normalised(test_x)).argmax(-1).numpy() == test_y).mean())
    assert torch_acc > 0.7  # a teacher worth importing
    path = str(tmp_path / "lenet5.pt")
    torch.save(net.state_dict(), path)

    out = str(tmp_path / "teacher")
    own = ("--resize=32", "--mean=0.1307", "--std=0.3081")
    result = _run_cli(f"--state_dict={path}", "--model=lenet5", "--dataset=fashion_mnist", f"--out={out}",
                      f"--data_dir={fmnist_data_dir}", *own)
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.load(open(os.path.join(out, teacher.TEACHER_META)))
    assert card["test_examples"] == 10000 and card["test_acc"] == pytest.approx(torch_acc, abs=3e-4)
    assert "resized bilinearly to 32x32" in card["preprocessing"]
    # a run with this teacher sees Fashion-MNIST as the teacher did
    config = ddad.get_config("fashion_mnist,smoke")
    config.teacher, config.teacher_dir, config.data_dir = "lenet5", out, fmnist_data_dir
    assert dataset_spec(config) == data.with_preprocessing(spec, 32, True, (0.1307,), (0.3081,))
    # the same file with ddad_jax's Fashion-MNIST preprocessing (zero-padded, its own
    # statistics) is a worse teacher: what stating its own is for
    from ddad_jax.import_teacher import import_teacher
    plain = import_teacher(path, "lenet5", "fashion_mnist", str(tmp_path / "plain"), data_dir=fmnist_data_dir)
    assert plain["test_acc"] < torch_acc - 0.02


@pytest.mark.parametrize("kwargs, match", [
    ({"mean": (0.5, 0.5)}, "1 channel\\(s\\): give one mean and one std per channel"),
    ({"std": (0.0,)}, "std must be positive"),
    ({"resize": 300}, "outside 4..224"),
    ({"resize": 32, "pad": 32}, "one of --resize and --pad"),
    ({"pad": 31}, "cannot be zero-padded to 31x31"),
    ({"pad": 16}, "cannot be zero-padded to 16x16"),
])
def test_a_teachers_preprocessing_that_cannot_be_computed_is_refused(kwargs, match):
    from ddad_jax.import_teacher import teacher_spec
    with pytest.raises(UserError, match=match):
        teacher_spec("fashion_mnist", **kwargs)
    assert teacher_spec("fashion_mnist", pad=36).image_size == 36
    assert teacher_spec("cifar10", resize=64, mean=(0.5,) * 3, std=(0.25,) * 3).resize


def test_cli_mean_of_the_wrong_channel_count_is_one_line_and_writes_nothing(tmp_path):
    path = str(tmp_path / "lenet5.pt")
    torch.save(_torch_net("lenet5", "fashion_mnist").state_dict(), path)
    result = _run_cli(f"--state_dict={path}", "--model=lenet5", "--dataset=fashion_mnist",
                      f"--out={tmp_path / 'teacher'}", "--mean=0.485,0.456,0.406", "--std=0.3")
    one_line_error(result, "give one mean and one std per channel")
    assert not (tmp_path / "teacher").exists()


@pytest.mark.slow
def test_the_teacher_script_trains_torchvision_and_lenet_teachers_that_import(tmp_path, fmnist_data_dir):
    """``experiments/torch_teacher.py`` (the README's worked example's first step): LeNet-5 (BN)
    on ddad_jax's own preprocessing, and torchvision's MobileNetV2 on resized images with its own
    normalisation, each saved with a record of its PyTorch accuracy; the MobileNetV2 imports with
    the same preprocessing, measured on the same first test images."""
    env = {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": xla_flags()}
    runs = {"lenet5_bn": [], "mobilenet_v2_035": ["--resize=32", "--mean=0.5", "--std=0.5"]}
    for model, own in runs.items():
        out = str(tmp_path / f"{model}.pt")
        result = subprocess.run([sys.executable, "-m", "experiments.torch_teacher", f"--model={model}", f"--out={out}",
                                 "--epochs=1", "--train_examples=512", "--test_examples=300", *own],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        record = json.load(open(out + ".json"))
        assert (record["model"], record["test_examples"], record["train_examples"]) == (model, 300, 512)
        assert f"--model={model} --dataset=fashion_mnist {' '.join(own)}".strip() in result.stdout
    result = _run_cli(f"--state_dict={tmp_path / 'mobilenet_v2_035.pt'}", "--model=mobilenet_v2_035",
                      "--dataset=fashion_mnist", *runs["mobilenet_v2_035"], f"--out={tmp_path / 'teacher'}",
                      f"--data_dir={fmnist_data_dir}", "--test_examples=300")
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.load(open(tmp_path / "teacher" / teacher.TEACHER_META))
    assert card["test_examples"] == 300 and card["dataset_spec"]["image_size"] == 32 and card["dataset_spec"]["resize"]
