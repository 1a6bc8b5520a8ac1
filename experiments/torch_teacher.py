"""A teacher trained elsewhere: a network trained on Fashion-MNIST in plain PyTorch, saved as a
``state_dict`` -- the first step of the README's worked example (PyTorch teacher in, int8 ONNX
student out). Needs torch (``pip install -e .[torch]``; torchvision for its networks) and
Debian's ``dataset-fashion-mnist``; no ddad_jax training code runs here.

    python -m experiments.torch_teacher --out=runs/torch_lenet5_bn.pt
    python -m experiments.torch_teacher --model=mobilenet_v2_050 --resize=64 --out=runs/torch_mnv2.pt

Beside ``--out`` goes ``OUT.json``: the model, its PyTorch test accuracy on the 10 000 test
images and how it was trained. ``--model`` is ``lenet5_bn`` (``ddad_jax.torch_layouts.LeNet5``) or a torchvision network
(``resnet18_imagenet``, ``mobilenet_v2_050``, ...: torchvision's own, its first convolution
taking one channel). Without ``--resize`` the input is ddad_jax's own ``fashion_mnist``
preprocessing (zero-padded 28 -> 32, standardised with 0.2190/0.3318); with ``--resize=N``
the images are resized bilinearly to NxN and standardised with ``--mean``/``--std`` -- a
teacher's own preprocessing, which ``ddad_jax.import_teacher`` is then told (the command
printed at the end says how).
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def load(split: str, source_dir: str, resize=None, mean=0.5, std=0.5):
    """(NCHW float32 images, int64 labels) of ``split``, preprocessed as the module docstring says."""
    from ddad_jax.data import fashion_mnist, get_spec  # pylint: disable=import-outside-toplevel
    images_file, labels_file = dict(train=fashion_mnist._FILES["train"], test=fashion_mnist._FILES["test"])[split]  # pylint: disable=protected-access
    paths = [os.path.join(source_dir, f) for f in (images_file, labels_file)]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        _fail(f"missing {missing[0]}: install Debian's dataset-fashion-mnist or pass --source_dir")
    x = fashion_mnist.read_idx(paths[0]).astype(np.float32)[:, None] / 255.0  # NCHW
    if resize is None:
        spec = get_spec("fashion_mnist")
        x = (np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))) - spec.mean[0]) / spec.std[0]
    else:
        import torch  # pylint: disable=import-outside-toplevel
        resized = [torch.nn.functional.interpolate(torch.from_numpy(x[i:i + 5000]), size=(resize, resize),
                                                   mode="bilinear", align_corners=False).numpy()
                   for i in range(0, len(x), 5000)]
        x = (np.concatenate(resized) - mean) / std
    return x.astype(np.float32), fashion_mnist.read_idx(paths[1]).astype(np.int64)


def build(name: str):
    """The untrained network ``name`` with 10 classes and one input channel."""
    from ddad_jax import torch_layouts  # pylint: disable=import-outside-toplevel
    if name == "lenet5_bn":
        return torch_layouts.LeNet5(num_classes=10, channels=1, use_bn=True)
    if name not in torch_layouts.TORCHVISION:
        _fail(f"--model {name} is neither lenet5_bn nor one of {', '.join(torch_layouts.TORCHVISION)}")
    return torch_layouts.torchvision_net(name, 10, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the .pt file to write (state_dict)")
    parser.add_argument("--model", default="lenet5_bn", help="lenet5_bn, or a torchvision network: resnet18_imagenet, "
                        "mobilenet_v2_050, ... (ddad_jax.torch_layouts.TORCHVISION)")
    parser.add_argument("--resize", type=int, default=None, help="train on images resized to this size, "
                        "standardised with --mean/--std (default: ddad_jax's padded 32x32)")
    parser.add_argument("--mean", type=float, default=0.5, help="with --resize: the input mean of images in [0, 1]")
    parser.add_argument("--std", type=float, default=0.5, help="with --resize: the input std")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--train_examples", type=int, default=0, help="the first N training images (0 = all)")
    parser.add_argument("--test_examples", type=int, default=0, help="measure on the first N test images (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source_dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = parser.parse_args()
    if os.path.exists(args.out) and not args.force:
        _fail(f"{args.out} exists; pass --force to overwrite it")
    if args.resize is not None and not 8 <= args.resize <= 224:
        _fail(f"--resize must be 8..224, got {args.resize}")
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        _fail("this example needs torch: pip install -e .[torch]")
    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    net = build(args.model)
    (train_x, train_y), (test_x, test_y) = (load(s, args.source_dir, args.resize, args.mean, args.std)
                                            for s in ("train", "test"))
    if args.train_examples:
        train_x, train_y = train_x[:args.train_examples], train_y[:args.train_examples]
    if args.test_examples:
        test_x, test_y = test_x[:args.test_examples], test_y[:args.test_examples]
    train_x, train_y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    b = args.batch_size
    t0 = time.time()
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        for i in range(0, len(order) - b + 1, b):
            idx = order[i:i + b]
            loss = torch.nn.functional.cross_entropy(net(train_x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(torch.from_numpy(test_x[i:i + 500])).argmax(1) for i in range(0, len(test_x), 500)])
        acc = float((pred.numpy() == test_y).mean())
        print(f"[torch teacher] epoch {epoch + 1}/{args.epochs}: test accuracy {acc:.4f} ({time.time() - t0:.0f}s)",
              flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    torch.save(net.state_dict(), tmp)
    os.replace(tmp, args.out)  # a failing run never leaves a half-written file under --out
    record = {"model": args.model, "test_acc": acc, "test_examples": len(test_y), "train_examples": len(train_y),
              "epochs": args.epochs, "seed": args.seed, "train_s": round(time.time() - t0, 1), "resize": args.resize,
              "mean": None if args.resize is None else args.mean, "std": None if args.resize is None else args.std}
    with open(args.out + ".json.tmp", "w") as f:
        json.dump(record, f, indent=2)
    os.replace(args.out + ".json.tmp", args.out + ".json")  # what was trained, beside the weights
    own = "" if args.resize is None else f" --resize={args.resize} --mean={args.mean} --std={args.std}"
    print(f"[torch teacher] saved {args.out} ({args.model}, test accuracy {acc:.4f}); import it with "
          f"python -m ddad_jax.import_teacher --state_dict={args.out} --model={args.model} --dataset=fashion_mnist"
          f"{own} --out=DIR")


if __name__ == "__main__":
    main()
