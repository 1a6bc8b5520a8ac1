"""A teacher trained elsewhere: LeNet-5 (BN) trained on Fashion-MNIST in plain PyTorch, saved
as a ``state_dict`` -- the first step of the README's worked example (PyTorch teacher in,
int8 ONNX student out). Needs torch (``pip install -e .[torch]``) and Debian's
``dataset-fashion-mnist``; no ddad_jax training code runs here.

    python -m experiments.torch_teacher --out=runs/torch_lenet5_bn.pt

The network is ``ddad_jax.torch_layouts.LeNet5`` (the layout ``ddad_jax.import_teacher``
reads), its input the images zero-padded 28 -> 32 and standardised exactly as ddad_jax's
``fashion_mnist`` spec does, so the imported teacher sees what it was trained on.
"""

import argparse
import os
import sys
import time

import numpy as np


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def load(split: str, source_dir: str):
    from ddad_jax.data import fashion_mnist, get_spec  # pylint: disable=import-outside-toplevel
    images_file, labels_file = dict(train=fashion_mnist._FILES["train"], test=fashion_mnist._FILES["test"])[split]  # pylint: disable=protected-access
    paths = [os.path.join(source_dir, f) for f in (images_file, labels_file)]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        _fail(f"missing {missing[0]}: install Debian's dataset-fashion-mnist or pass --source_dir")
    spec = get_spec("fashion_mnist")
    x = fashion_mnist.read_idx(paths[0]).astype(np.float32) / 255.0
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))[:, None]  # NCHW, 32x32
    x = (x - spec.mean[0]) / spec.std[0]
    return x, fashion_mnist.read_idx(paths[1]).astype(np.int64)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the .pt file to write (state_dict)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source_dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = parser.parse_args()
    if os.path.exists(args.out) and not args.force:
        _fail(f"{args.out} exists; pass --force to overwrite it")
    try:
        import torch  # pylint: disable=import-outside-toplevel
        from ddad_jax.torch_layouts import LeNet5  # pylint: disable=import-outside-toplevel
    except ImportError:
        _fail("this example needs torch: pip install -e .[torch]")
    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    (train_x, train_y), (test_x, test_y) = load("train", args.source_dir), load("test", args.source_dir)
    train_x, train_y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    net = LeNet5(num_classes=10, channels=1, use_bn=True)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    t0 = time.time()
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        for i in range(0, len(order) - 127, 128):
            idx = order[i:i + 128]
            loss = torch.nn.functional.cross_entropy(net(train_x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(torch.from_numpy(test_x[i:i + 1000])).argmax(1) for i in range(0, len(test_x), 1000)])
        acc = float((pred.numpy() == test_y).mean())
        print(f"[torch teacher] epoch {epoch + 1}/{args.epochs}: test accuracy {acc:.4f} ({time.time() - t0:.0f}s)",
              flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    torch.save(net.state_dict(), tmp)
    os.replace(tmp, args.out)  # a failing run never leaves a half-written file under --out
    print(f"[torch teacher] saved {args.out} (LeNet-5 BN, ddad_jax.torch_layouts layout)")


if __name__ == "__main__":
    main()
