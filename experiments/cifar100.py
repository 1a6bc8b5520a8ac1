"""python -m experiments.cifar100 --config=configs/<method>.py:cifar100 --workdir=<dir>"""

from experiments import launch

if __name__ == "__main__":
    launch.run("cifar100")
