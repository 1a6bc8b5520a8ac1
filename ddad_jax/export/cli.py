"""``python -m ddad_jax.export --run=RUN --out=DIR [--onnx] [--int8] [--calibration_images=N]
[--calibration=auto] [--seed=S] [--force] [--evaluate [--data_dir=D]]``: ``stage.export_student``
from the command line; a mistake is one ``error:`` line and exit status 2, with nothing changed."""

import argparse
import os
import sys
from typing import Any, Dict, List

from ddad_jax.errors import UserError
from ddad_jax.export import stage

DESCRIPTION = "The distilled student out of a run: orbax + json card, ONNX, int8 calibrated on synthetic images."


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m ddad_jax.export", description=DESCRIPTION)
    parser.add_argument("--run", required=True, help="a finished distillation run's --workdir")
    parser.add_argument("--out", required=True, help="the export directory (new, or replaced with --force)")
    parser.add_argument("--onnx", action="store_true", help="also student_fp32.onnx")
    parser.add_argument("--int8", action="store_true", help="also student_int8.onnx (implies --onnx)")
    parser.add_argument("--calibration_images", type=int, default=512,
                        help="generator images the int8 ranges are calibrated on")
    parser.add_argument("--calibration", default="auto", help="how int8 activation ranges are calibrated: "
                        "minmax, percentile, entropy, or auto (each; kept: the best top-1 agreement with fp32 on "
                        "other generator images)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration and check images")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--evaluate", action="store_true",
                        help="also measure each exported model on the dataset's prepared test split")
    parser.add_argument("--data_dir", default="", help="where that split is ('' = $TFDS_DATA_DIR or "
                        "~/tensorflow_datasets)")
    return parser.parse_args(argv)


def report(result: Dict[str, Any]) -> List[str]:
    """What an export wrote and measured (``export_student``'s result), as printed lines."""
    acc = result["student_acc"]
    measured = "no test accuracy: the run had no data" if acc is None else f"test accuracy {acc:.4f}"
    lines = [f"exported {result['architecture']} ({measured}) to {result['out_dir']}: "
             + ", ".join(os.path.basename(p) for p in result["files"].values())]
    if "max_abs_logit_diff_fp32" in result:
        lines.append(f"  ONNX fp32: max |logit - JAX logit| = {result['max_abs_logit_diff_fp32']:.2e}")
    if "int8_top1_agreement_with_fp32" in result:
        lines.append(f"  ONNX int8: {result['calibration_method']} calibration on {result['calibration_images']} "
                     "generator images; top-1 agrees "
                     f"with fp32 on {100 * result['int8_top1_agreement_with_fp32']:.1f} % of other generator images")
    if "test_accuracy" in result:
        t = result["test_accuracy"]
        lines.append(f"  on {t['examples']} test images: " + ", ".join(
            f"{name} {100 * t[key]:.2f} %" for key, name in (("jax", "JAX"), ("onnx_fp32", "ONNX fp32"),
                                                             ("onnx_int8", "ONNX int8")) if key in t))
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = stage.export_student(args.run, args.out, onnx=args.onnx, int8=args.int8,
                                      calibration_images=args.calibration_images, force=args.force, seed=args.seed,
                                      calibration=args.calibration,
                                      test_data_dir=args.data_dir if args.evaluate else None)
    except UserError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr, flush=True)
        return 2
    print("\n".join(report(result)), flush=True)
    return 0
