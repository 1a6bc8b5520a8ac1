"""python -m experiments.cifar10 --config=configs/<method>.py:cifar10 --workdir=<dir>"""

from experiments import launch

if __name__ == "__main__":
    launch.run("cifar10")
