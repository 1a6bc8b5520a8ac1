"""PyTorch classifiers with the module names of the published layouts that
``ddad_jax.torch_import`` reads (our own code; that module's docstring says which repository
each layout comes from): the tests' reference networks, and a starting point for a user who
trains a teacher in PyTorch (``experiments/torch_teacher.py``). Needs torch; nothing in the
core imports this module. Global average pooling is adaptive, so the
ResNets also run on inputs smaller than 32x32."""

import torch
import torch.nn.functional as F
from torch import nn


class LeNet5(nn.Module):
    """DAFL's LeNet-5 (conv1-3, fc1-2), with ``use_bn`` ddad_jax's bn1-3 after each conv."""

    def __init__(self, num_classes=10, channels=1, width=1.0, use_bn=False):
        super().__init__()
        c1, c2, c3, hidden = (int(c * width) for c in (6, 16, 120, 84))
        self.use_bn = use_bn
        self.conv1 = nn.Conv2d(channels, c1, 5)
        if use_bn:
            self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        if use_bn:
            self.bn2 = nn.BatchNorm2d(c2)
        self.conv3 = nn.Conv2d(c2, c3, 5)
        if use_bn:
            self.bn3 = nn.BatchNorm2d(c3)
        self.fc1 = nn.Linear(c3, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        for i in (1, 2, 3):
            x = getattr(self, f"conv{i}")(x)
            if self.use_bn:
                x = getattr(self, f"bn{i}")(x)
            x = F.relu(x)
            if i < 3:
                x = F.max_pool2d(x, 2, 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class BasicBlock(nn.Module):
    """Post-activation block; the projection is ``shortcut`` (DAFL) or ``downsample`` (RepDistiller)."""

    def __init__(self, cin, cout, stride, shortcut_name):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut_name = shortcut_name
        proj = None
        if stride != 1 or cin != cout:
            proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        setattr(self, shortcut_name, proj)

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        proj = getattr(self, self.shortcut_name)
        return F.relu(y + (proj(x) if proj is not None else x))


class CifarResNet(nn.Module):
    """ResNet-18/34 as DAFL names it (``shortcut``, ``linear``), or with ``tiny=True`` the
    16-32-64 ResNet-20/110 as RepDistiller names it (``downsample``, ``fc``)."""

    def __init__(self, stage_sizes, num_classes=10, channels=3, tiny=False):
        super().__init__()
        width = 16 if tiny else 64
        self.tiny = tiny
        self.conv1 = nn.Conv2d(channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for i, blocks in enumerate(stage_sizes):
            cout = width * 2**i
            layer = []
            for j in range(blocks):
                layer.append(BasicBlock(cin, cout, 2 if i > 0 and j == 0 else 1, "downsample" if tiny else "shortcut"))
                cin = cout
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.num_stages = len(stage_sizes)
        setattr(self, "fc" if tiny else "linear", nn.Linear(cin, num_classes))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return (self.fc if self.tiny else self.linear)(x)


class WideBlock(nn.Module):
    """Pre-activation block; where width changes the shortcut convolves the activated input."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.convShortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if cin != cout else None

    def forward(self, x):
        out = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return y + (self.convShortcut(out) if self.convShortcut is not None else x)


class NetworkBlock(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1)
                                     for j in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth, widen_factor, num_classes=10, channels=3):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(channels, 16, 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(F.relu(self.bn1(x)), 1), 1)
        return self.fc(x)


def build(name, num_classes=10, channels=3):
    """The PyTorch twin of registry model ``name``."""
    return {
        "lenet5": lambda: LeNet5(num_classes, channels),
        "lenet5_bn": lambda: LeNet5(num_classes, channels, use_bn=True),
        "lenet5_half": lambda: LeNet5(num_classes, channels, width=0.5),
        "resnet18": lambda: CifarResNet((2, 2, 2, 2), num_classes, channels),
        "resnet34": lambda: CifarResNet((3, 4, 6, 3), num_classes, channels),
        "resnet20": lambda: CifarResNet((3, 3, 3), num_classes, channels, tiny=True),
        "wrn16_1": lambda: WideResNet(16, 1, num_classes, channels),
        "wrn16_2": lambda: WideResNet(16, 2, num_classes, channels),
    }[name]()


# registry name -> (torchvision builder, its keyword arguments)
TORCHVISION = {"resnet18_imagenet": ("resnet18", {}), "resnet34_imagenet": ("resnet34", {}),
               "resnet50_imagenet": ("resnet50", {}), "mobilenet_v2": ("mobilenet_v2", {}),
               "mobilenet_v2_050": ("mobilenet_v2", {"width_mult": 0.5}),
               "mobilenet_v2_035": ("mobilenet_v2", {"width_mult": 0.35})}


def torchvision_net(name, num_classes=10, channels=3):
    """torchvision's own network for registry model ``name`` (``TORCHVISION``), untrained; for
    ``channels`` other than 3 its first convolution takes that many (same name and shape
    otherwise: what an engineer does for grayscale images, and what the import expects)."""
    import torchvision  # pylint: disable=import-outside-toplevel
    builder, kwargs = TORCHVISION[name]
    net = getattr(torchvision.models, builder)(num_classes=num_classes, **kwargs)
    if channels != 3:
        parent, attr = (net, "conv1") if builder.startswith("resnet") else (net.features[0], "0")
        old = getattr(parent, attr)
        setattr(parent, attr, nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                                        bias=old.bias is not None))
    return net


def randomize(net, seed=0, passes=3, input_shape=(16, 3, 32, 32)):
    """Random weights and non-trivial BatchNorm statistics: random affine parameters, then a
    few train-mode passes over random inputs (momentum 0.5 so they move far from 0 and 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
                m.momentum = 0.5
        net.train()
        for _ in range(passes):
            net(1.5 * torch.randn(input_shape, generator=gen) + 0.3)
    return net.eval()
