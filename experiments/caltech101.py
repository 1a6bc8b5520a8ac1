"""python -m experiments.caltech101 --config=configs/<method>.py:caltech101 --workdir=<dir>"""

from experiments import launch

if __name__ == "__main__":
    launch.run("caltech101")
