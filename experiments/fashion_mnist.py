"""python -m experiments.fashion_mnist --config=configs/<method>.py:fashion_mnist --workdir=<dir>"""

from experiments import launch

if __name__ == "__main__":
    launch.run("fashion_mnist")
