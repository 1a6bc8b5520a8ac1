"""What a user sees during a run: progress lines, a JSON-lines metrics file, TensorBoard
scalars (tensorboardX, no TensorFlow needed) and PNG grids of images."""

import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ddad_jax import workdir as workdir_lib


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def summary_writer_class():
    """tensorboardX's ``SummaryWriter`` (None without tensorboardX), imported without torch.

    tensorboardX imports torch whenever it is installed, only to accept torch tensors: 2.3 s
    of every launch on a 2-core CPU. We log Python floats, so torch is hidden while
    tensorboardX is imported (unless something already imported it) and visible again after."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX expects
    try:
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
        return SummaryWriter
    except ImportError:
        return None
    finally:
        if hide:
            sys.modules.pop("torch", None)


class Reporter:
    """Writes metrics to ``workdir/metrics.jsonl`` and ``workdir/tb``; prints progress.

    A run resumed from the checkpoint of ``start_step`` reports again what came after it:
    the JSON-lines records after ``start_step`` are dropped, and TensorBoard is told to
    discard the earlier event files' scalars after it (tensorboardX's ``purge_step``), so
    both hold each step once, as for a run that was never interrupted.

    ``writes=False`` (the other processes of a multi-process run, where process 0 reports):
    nothing is written or printed; ``history`` still reads what process 0 wrote.
    """

    def __init__(self, workdir: str, total_steps: int, start_step: int = 0, stream=None, writes: bool = True):
        self.workdir, self.total_steps, self.writes = workdir, total_steps, writes
        self.stream = stream or sys.stdout
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self._t0, self._step0 = None, start_step  # set at the first report: excludes compilation
        self._tb, self._tb_remote = None, None
        if not writes:
            return
        workdir_lib.path(workdir).mkdir(parents=True, exist_ok=True)
        self._drop_records_after(start_step)  # a resumed run rewrites what came after its checkpoint
        writer = summary_writer_class()
        tb_dir = os.path.join(workdir, "tb")
        if writer and workdir_lib.is_remote(workdir):
            # events are written here and each flushed file uploaded whole (``_upload_tb``): a
            # bucket has no append, and tensorboardX's own gs:// writer re-sends its buffer even
            # from a finaliser at exit
            self._tb_remote, tb_dir = tb_dir, tempfile.mkdtemp(prefix="ddad_jax_tb.")
        self._tb = writer(tb_dir, purge_step=start_step + 1 if start_step else None) if writer else None

    def _drop_records_after(self, step: int) -> None:
        """Keeps the records up to ``step`` (a resumed run rewrites what came after its
        checkpoint). A last line that is not valid JSON is a write torn by a kill: it is
        dropped with a warning. An unparsable line before it is not ours to judge and is
        kept as it is. The file is replaced atomically, so a kill here loses nothing."""
        jsonl = workdir_lib.path(self.jsonl_path)
        if not jsonl.exists():
            return
        raw = jsonl.read_bytes()
        lines = raw.decode("utf-8", errors="surrogateescape").split("\n")  # bytes kept as they are
        while lines and not lines[-1].strip():
            lines.pop()
        keep = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                if i == len(lines) - 1:
                    print(f"warning: dropped the torn last line of {self.jsonl_path} "
                          f"(an interrupted write): {line[:80]!r}", file=sys.stderr, flush=True)
                else:
                    keep.append(line)
                continue
            record_step = record.get("step", 0) if isinstance(record, dict) else 0
            if not isinstance(record_step, (int, float)) or record_step <= step:
                keep.append(line)
        text = "".join(line + "\n" for line in keep).encode("utf-8", errors="surrogateescape")
        if text == raw:
            return
        if workdir_lib.is_remote(self.jsonl_path):
            jsonl.write_bytes(text)  # one object upload: the old object or the new
            return
        tmp = f"{self.jsonl_path}.tmp"
        with open(tmp, "wb") as f:
            f.write(text)
        os.replace(tmp, self.jsonl_path)

    def history(self, key: str) -> List[Tuple[int, float]]:
        """(step, value) of every record of ``key`` so far, oldest first: on resume, what
        the interrupted runs reported up to the checkpoint (e.g. to carry on a best-so-far)."""
        found = []
        jsonl = workdir_lib.path(self.jsonl_path)
        if not jsonl.exists():
            return found
        with jsonl.open("rb") as f:
            for line in f.read().decode("utf-8", errors="surrogateescape").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and key in record:
                    found.append((record.get("step", 0), record[key]))
        return found

    def write(self, step: int, metrics: Dict[str, float]) -> None:
        if not self.writes:
            return
        metrics = {k: float(v) for k, v in metrics.items()}
        workdir_lib.append_text(self.jsonl_path, json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
            self._upload_tb()

    def progress(self, step: int, metrics: Dict[str, float], prefix: str = "") -> None:
        if not self.writes:
            return
        if self._t0 is None:
            self._t0, self._step0 = time.time(), step
        elapsed = time.time() - self._t0
        rate = (step - self._step0) / elapsed if elapsed > 0 and step > self._step0 else float("nan")
        eta = (self.total_steps - step) / rate if rate > 0 else float("nan")
        parts = [f"{prefix}step {step}/{self.total_steps}"]
        parts += [f"{k} {float(v):.4g}" for k, v in metrics.items()]
        parts += [f"{rate:.2f} steps/s" if math.isfinite(rate) else "? steps/s", f"ETA {_fmt_duration(eta)}"]
        print(" | ".join(parts), file=self.stream, flush=True)

    def _upload_tb(self) -> None:
        """A remote workdir's event files, copied whole from their local directory to ``tb/``."""
        if self._tb_remote is None:
            return
        local = self._tb.logdir
        for name in os.listdir(local):
            with open(os.path.join(local, name), "rb") as f:
                workdir_lib.path(os.path.join(self._tb_remote, name)).write_bytes(f.read())

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._upload_tb()
            if self._tb_remote is not None:
                shutil.rmtree(self._tb.logdir, ignore_errors=True)


def save_image_grid(path: str, images: np.ndarray, ncols: Optional[int] = None, scale: int = 2,
                    labels: Optional[np.ndarray] = None, class_names: Sequence[str] = ()) -> None:
    """Saves [0, 1] NHWC images (1 or 3 channels) as one PNG grid; ``labels`` (one int per
    image, e.g. the teacher's predicted class) are written in each tile's corner, as their
    ``class_names`` when given (cut to the tile's width), else as numbers."""
    from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel

    images = np.asarray(images, np.float32)
    n, h, w, c = images.shape
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = np.ones((nrows * (h + 2) + 2, ncols * (w + 2) + 2, c), np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[2 + r * (h + 2): 2 + r * (h + 2) + h, 2 + col * (w + 2): 2 + col * (w + 2) + w] = images[i]
    pixels = (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)
    img = Image.fromarray(pixels[..., 0] if c == 1 else pixels)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    if labels is not None:
        img = img.convert("RGB")
        draw = ImageDraw.Draw(img)
        fits = max(1, (w * scale - 2) // 6)  # characters of PIL's default font across a tile
        for i, label in enumerate(np.asarray(labels)[:n]):
            r, col = divmod(i, ncols)
            x, y = (2 + col * (w + 2)) * scale, (2 + r * (h + 2)) * scale
            text = _label_text(int(label), class_names, fits)
            draw.rectangle((x, y, x + int(draw.textlength(text)) + 2, y + 11), fill=(0, 0, 0))
            draw.text((x + 1, y), text, fill=(255, 255, 0))
    png = io.BytesIO()
    img.save(png, format="PNG")
    target = workdir_lib.path(workdir_lib.absolute(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(png.getvalue())


def _label_text(label: int, class_names: Sequence[str], fits: int) -> str:
    """A tile's label: its class name (cut to ``fits`` characters) when known, else the number."""
    if 0 <= label < len(class_names):
        name = str(class_names[label])
        return name if len(name) <= fits else name[:max(1, fits - 1)] + "."
    return str(label)
