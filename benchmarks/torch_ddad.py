"""A PyTorch eager reference of one DDAD iteration, for the speed benchmark only.

Same architectures (DFAD generator, LeNet-5 with/without BN, CIFAR ResNet-18/34), the
same losses (sum over the teacher's BN layers of ||mu - mu_run|| + ||var - var_run||,
minus the L1 teacher-student discrepancy) and optimisers (generator Adam, student SGD
with momentum and weight decay) as ``ddad_jax.methods.ddad``, written the way a careful
PyTorch user would: the teacher frozen and in eval mode, BN inputs captured with
forward pre-hooks, gradients taken only for the parameters being updated. Every step ends
in a ``float(...)`` of its loss, which waits for the device, so timings are complete.

torch is an optional, benchmark-only dependency (``pip install torch``).
"""

import torch
import torch.nn.functional as F
from torch import nn


class Generator(nn.Module):
    def __init__(self, base_channels, image_size, channels, latent_dim):
        super().__init__()
        self.s, c = image_size // 4, base_channels
        self.c = c
        self.linear = nn.Linear(latent_dim, 2 * c * self.s * self.s, bias=False)
        self.bn0 = nn.BatchNorm2d(2 * c)
        self.conv1, self.bn1 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, bias=False), nn.BatchNorm2d(2 * c)
        self.conv2, self.bn2 = nn.Conv2d(2 * c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, channels, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(channels, affine=False)

    def forward(self, z):
        x = self.bn0(self.linear(z).view(z.shape[0], 2 * self.c, self.s, self.s))
        x = F.leaky_relu(self.bn1(self.conv1(F.interpolate(x, scale_factor=2))), 0.2)
        x = F.leaky_relu(self.bn2(self.conv2(F.interpolate(x, scale_factor=2))), 0.2)
        return self.bn3(torch.tanh(self.conv3(x)))


class LeNet5(nn.Module):
    def __init__(self, num_classes=10, width=1.0, use_bn=False, channels=1):
        super().__init__()
        c1, c2, c3, hidden = (int(c * width) for c in (6, 16, 120, 84))
        bn = (lambda n: nn.BatchNorm2d(n)) if use_bn else (lambda n: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(channels, c1, 5), bn(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), bn(c2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 5), bn(c3), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c3, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, stage_sizes, num_classes=10, channels=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        blocks, cin = [], 64
        for i, n in enumerate(stage_sizes):
            for j in range(n):
                blocks.append(BasicBlock(cin, 64 * 2**i, 2 if i > 0 and j == 0 else 1))
                cin = 64 * 2**i
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.mean(self.blocks(self.stem(x)), dim=(2, 3)))


def classifier(name, num_classes, channels):
    return {
        "lenet5": lambda: LeNet5(num_classes, 1.0, False, channels),
        "lenet5_bn": lambda: LeNet5(num_classes, 1.0, True, channels),
        "lenet5_half": lambda: LeNet5(num_classes, 0.5, False, channels),
        "lenet5_half_bn": lambda: LeNet5(num_classes, 0.5, True, channels),
        "resnet18": lambda: CifarResNet((2, 2, 2, 2), num_classes, channels),
        "resnet34": lambda: CifarResNet((3, 4, 6, 3), num_classes, channels),
    }[name]()


class DDADIteration:
    """``step()`` = one generator update then ``student_steps`` student updates; the parts
    are exposed as ``generator_step``, ``student_step`` and ``teacher_inference``."""

    def __init__(self, teacher, student, image_size, channels, num_classes=10, generator_channels=64,
                 latent_dim=256, batch_size=256, student_steps=5, bn_weight=1.0, adv_weight=1.0,
                 student_lr=0.1, momentum=0.9, weight_decay=5e-4, generator_lr=1e-3, seed=0, device="cpu"):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.batch, self.latent, self.k = batch_size, latent_dim, student_steps
        self.bn_weight, self.adv_weight = bn_weight, adv_weight
        self.generator = Generator(generator_channels, image_size, channels, latent_dim).to(self.device).train()
        self.teacher = classifier(teacher, num_classes, channels).to(self.device).eval()
        self.student = classifier(student, num_classes, channels).to(self.device).train()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.g_opt = torch.optim.Adam(self.generator.parameters(), lr=generator_lr)
        self.s_opt = torch.optim.SGD(self.student.parameters(), lr=student_lr, momentum=momentum,
                                     weight_decay=weight_decay)
        self._bn_inputs = []
        self._teacher_bns = [m for m in self.teacher.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in self._teacher_bns:
            m.register_forward_pre_hook(lambda mod, args: self._bn_inputs.append(args[0]))

    def _noise(self):
        return torch.randn(self.batch, self.latent, device=self.device)

    def _teacher(self, x):
        self._bn_inputs = []
        return self.teacher(x)

    def generator_losses(self, z):
        """(BN-statistics loss, L1 discrepancy) of the generator's images for latents ``z``."""
        x = self.generator(z)
        t_logits = self._teacher(x)
        bn_loss = sum(torch.linalg.vector_norm(h.mean((0, 2, 3)) - m.running_mean)
                      + torch.linalg.vector_norm(h.var((0, 2, 3), unbiased=False) - m.running_var)
                      for h, m in zip(self._bn_inputs, self._teacher_bns))
        return bn_loss, (self.student(x) - t_logits).abs().mean()

    def generator_step(self, z=None):
        bn_loss, adv = self.generator_losses(self._noise() if z is None else z)
        loss = self.bn_weight * bn_loss - self.adv_weight * adv
        params = list(self.generator.parameters())
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p.grad = g
        self.g_opt.step()
        return float(loss.detach())

    def student_step(self, z=None):
        with torch.no_grad():
            x = self.generator(self._noise() if z is None else z)
            t_logits = self._teacher(x)
        loss = (self.student(x) - t_logits).abs().mean()
        self.s_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.s_opt.step()
        return float(loss.detach())

    def teacher_inference(self):
        """The frozen teacher on one fixed generated batch, BN inputs captured."""
        with torch.no_grad():
            if not hasattr(self, "_fixed"):
                self._fixed = self.generator(self._noise())
            return float(self._teacher(self._fixed).sum())

    def step(self):
        self.generator_step()
        for _ in range(self.k):
            loss = self.student_step()
        return loss
