"""DDAD from a torchvision teacher trained in PyTorch at 64x64: an engineer's path, measured offline.

    python -m experiments.torch_teacher --model=mobilenet_v2_050 --resize=64 --out=runs/torch_mnv2_64.pt
    python -m ddad_jax.import_teacher --state_dict=runs/torch_mnv2_64.pt --model=mobilenet_v2_050 \\
        --dataset=fashion_mnist --resize=64 --mean=0.5 --std=0.5 --out=runs/mnv2_64_teacher
    python -m experiments.fashion_mnist --config=configs/fmnist64_torchvision.py --workdir=runs/fmnist64_ddad \\
        --config.teacher_dir=runs/mnv2_64_teacher

The teacher's card carries its preprocessing (Fashion-MNIST resized to 64x64, [-1, 1]), so the
run distils at 64x64 with DAFL's generator doubling three times. ``benchmarks/fmnist64_torchvision.py``
runs the whole path for seeds 0-2 and exports the students to ONNX fp32 and int8.
"""

import ml_collections

from configs import common, fmnist_lenet5


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = fmnist_lenet5.get_config()  # DDAD's Fashion-MNIST schedule and rates
    c.teacher, c.student = "mobilenet_v2_050", "mobilenet_v2_035"
    c.teacher_dir = "runs/mnv2_64_teacher"
    # a 64x64 batch costs four 32x32 ones: half the batch and fewer iterations keep a seed to
    # minutes on 2 CPU cores
    c.batch_size = 64
    c.num_epochs, c.iters_per_epoch = 30, 25
    c.finetune_epochs = 8
    c.sample_grid = 16
    return common.protocol(c, arg, "configs/fmnist64_torchvision.py")
