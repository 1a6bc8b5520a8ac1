"""Everything that is only there to make XLA:CPU fast: ``OPS`` for the models and the device split.

``backends.ops_for`` gives the models ``OPS`` on the CPU backend and plain Flax elsewhere.
Every piece computes the same function as its plain Flax counterpart, with the same
parameters (a checkpoint moves freely between the two); only the order of the sums
differs. Measurements are on 2 cores.

Convolutions (``Conv``: ``nn.Conv`` with ``conv_general_dilated`` below). XLA's CPU backend
computes a convolution's weight gradient as one large correlation whose speed falls off a
cliff as the batch grows: for the DFAD generator's 32x32, 32->16 channel layer at batch 128
it takes ~350 ms, against ~23 ms for the same sum done as 16 chunks of 8 images. The input
gradient has no such cliff. ``conv_general_dilated`` here is a drop-in for
``lax.conv_general_dilated`` (flax's ``nn.Conv`` takes it as an attribute) with that
chunked weight gradient. The result is the same sum in a different order.

Layers with few input or output channels (an image's 1 or 3: a classifier's first layer,
the generator's last) take another path, ``few_channel_conv``: shifted windows and
one matmul, whose gradients are matmuls and fused sums. XLA's CPU convolution with one
output channel -- the gradient with respect to the image of a first layer, which DDAD's
generator step needs for both teacher and student -- took ~25 ms each at batch 128.

Layers with small output maps and many channels (a CIFAR ResNet's 8x8 and 4x4 stages) take
their weight gradient as one matmul of strided input patches with the output gradient
(``_patches_weight_grad``): XLA's CPU weight-gradient convolution is slowest there, and
chunking makes it slower still.

The generator's upsampling and the 3x3 convolution after it run as one cheaper 2x2
convolution (``UpsampleConv3x3``; its forward at batch 128 went from 37 to 20 ms on one
device). LeNet's max pooling is a max over a reshape (``max_pool``; XLA's ``reduce_window``
gradient cost ~20 ms an iteration). (Splitting a CPU host into several XLA devices is
process setup: ``parallel.split_host_devices``.)
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ddad_jax.backends import Ops
from ddad_jax.models import layers

WEIGHT_GRAD_CHUNK = 8  # images per chunk; best of 8/16/32/64 measured
FEW_CHANNELS = 4  # convolutions with at most this many input or output channels are
# computed as a matmul and shifted slices (``few_channel_conv``); 0 = never
# A convolution whose output map has at most PATCHES_MAX_PIXELS pixels (8x8: a CIFAR
# ResNet's last two stages; 0 = never) and whose patch has at least PATCHES_MIN_SIZE values
# (kh * kw * cin) gets its weight gradient as one matmul of patches. Measured on ResNet layers
# (>= 128 channels, 3x3) only, so LeNet's 5x5 layers keep their path.
PATCHES_MAX_PIXELS = 64
PATCHES_MIN_SIZE = 1024


def _chunk_size(batch: int, target: int) -> int:
    return max(c for c in range(1, min(batch, target) + 1) if batch % c == 0)


def _with_weight_grad(conv, weight_grad):
    """``conv(x, w)`` with a custom VJP: the input gradient is XLA's, the weight gradient
    ``weight_grad(x, w, ct)``."""

    @jax.custom_vjp
    def f(x, w):
        return conv(x, w)

    def fwd(x, w):
        return conv(x, w), (x, w)

    def bwd(res, ct):
        x, w = res
        dx = jax.vjp(lambda x_: conv(x_, w), x)[1](ct)[0]
        return dx, weight_grad(x, w, ct).astype(w.dtype)

    f.defvjp(fwd, bwd)
    return f


def _chunked_weight_grad(conv, chunk: int):
    """``conv(x, w)`` (batch on axis 0 of ``x``) whose weight gradient is the sum over
    chunks of ``chunk`` images."""

    def weight_grad(x, w, ct):
        # Unrolled on purpose: the same sum as a lax.scan ran 3x slower than XLA's own.
        dw = jnp.zeros_like(w)
        for i in range(0, x.shape[0], chunk):
            dw = dw + jax.vjp(lambda w_: conv(x[i:i + chunk], w_), w)[1](ct[i:i + chunk])[0]
        return dw

    return _with_weight_grad(conv, weight_grad)


def _patches_weight_grad(conv, strides, padding, precision):
    """``conv(x, w)`` (NHWC x HWIO, explicit non-negative ``padding``) whose weight gradient
    is one matmul: the (n*h*w, kh*kw*cin) matrix of strided input patches, transposed,
    times the (n*h*w, cout) output gradient. XLA's CPU weight-gradient convolution is slow
    on small maps with many channels (ResNet-18's 4x4, 512->512 layer at batch 16: ~18 ms,
    ~35 ms chunked, ~11 ms as this matmul; measured on 2 cores)."""

    def weight_grad(x, w, ct):
        kh, kw, cin, cout = w.shape
        n, h, wd = ct.shape[:3]
        patches = _gather_taps(_pad_hw(x, padding), kh, kw, h, wd, strides=strides)
        dw = jnp.dot(patches.reshape((n * h * wd, kh * kw * cin)).T, ct.reshape((n * h * wd, cout)),
                     precision=precision)
        return dw.reshape(w.shape)

    return _with_weight_grad(conv, weight_grad)


def _windows(x, kh, kw, h, w, flip=False, strides=(1, 1)):
    """The (h, w) windows of ``x`` (taking every ``strides``-th row and column) at each of
    the ``kh * kw`` kernel offsets (tap-major); ``flip`` reverses the offsets (for the
    transposed operation)."""
    sh, sw = strides
    for u in range(kh):
        for v in range(kw):
            du, dv = (kh - 1 - u, kw - 1 - v) if flip else (u, v)
            yield x[:, du:du + sh * (h - 1) + 1:sh, dv:dv + sw * (w - 1) + 1:sw]


def _gather_taps(x, kh, kw, h, w, flip=False, strides=(1, 1)):
    """The shifted (h, w) windows of ``x``, side by side on the channel axis (tap-major)."""
    return jnp.concatenate(list(_windows(x, kh, kw, h, w, flip, strides)), axis=-1)


def _sum_taps(t, kh, kw, h, w, flip=False):
    """The sum over taps of shifted (h, w) windows of ``t`` (channels tap-major):
    the transpose of ``_gather_taps`` when ``flip`` differs."""
    t = t.reshape((*t.shape[:3], kh * kw, -1))
    return sum(window[:, :, :, i] for i, window in enumerate(_windows(t, kh, kw, h, w, flip)))


def _pad_hw(x, pads):
    return jnp.pad(x, ((0, 0), *pads, (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def few_channel_conv(x, w, padding, precision=None):
    """A stride-1, undilated NHWC x HWIO convolution (non-negative ``padding`` pairs)
    written as shifted windows and one matmul, for layers with few input or output
    channels (an image's 1 or 3), where XLA's CPU convolutions are slowest: the gradient
    with respect to the image of a first layer is a convolution with one output channel,
    ~25 ms of a ~0.5 s Fashion-MNIST DDAD iteration on 2 cores. Few inputs: the windows
    of ``x`` side by side (patches) times the kernel. Few outputs: ``x`` times each of
    the kernel's taps, then the shifted products summed. The gradients are written the
    same way (windows gathered, never scattered), so they are matmuls and fused sums."""
    return _few_channel_fwd(x, w, padding, precision)[0]


def _few_channel_fwd(x, w, padding, precision):
    kh, kw, cin, cout = w.shape
    xp = _pad_hw(x, padding)
    h, wd = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    if cin <= cout:  # patches (n, h, wd, kh * kw * cin) @ (kh * kw * cin, cout)
        y = jnp.dot(_gather_taps(xp, kh, kw, h, wd), w.reshape((-1, cout)), precision=precision)
    else:  # x @ taps (cin, kh * kw * cout), then the shifted products summed
        y = _sum_taps(jnp.dot(xp, w.transpose((2, 0, 1, 3)).reshape((cin, -1)), precision=precision), kh, kw, h, wd)
    return y, (x, w)


def _few_channel_bwd(padding, precision, res, ct):
    x, w = res
    kh, kw, cin, cout = w.shape
    xp = _pad_hw(x, padding)
    hp, wp = xp.shape[1:3]
    h, wd = ct.shape[1:3]
    contract = lambda a, b: jnp.einsum("nhwi,nhwo->io", a, b, precision=precision)
    if cin <= cout:
        patches = _gather_taps(xp, kh, kw, h, wd)
        dw = contract(patches, ct).reshape(w.shape)
        dpatches = jnp.dot(ct, w.reshape((-1, cout)).T, precision=precision)
        dxp = _sum_taps(_pad_hw(dpatches, ((kh - 1, kh - 1), (kw - 1, kw - 1))), kh, kw, hp, wp, flip=True)
    else:
        wt = w.transpose((2, 0, 1, 3)).reshape((cin, -1))
        dtaps = _gather_taps(_pad_hw(ct, ((kh - 1, kh - 1), (kw - 1, kw - 1))), kh, kw, hp, wp, flip=True)
        dw = contract(xp, dtaps).reshape((cin, kh, kw, cout)).transpose((1, 2, 0, 3))
        dxp = jnp.dot(dtaps, wt.T, precision=precision)
    (pt, _), (pl, _) = padding
    dx = dxp[:, pt:pt + x.shape[1], pl:pl + x.shape[2]]
    return dx.astype(x.dtype), dw.astype(w.dtype)


few_channel_conv.defvjp(_few_channel_fwd, _few_channel_bwd)


def _varying_axes(x) -> frozenset:
    aval = jax.typeof(x)
    if hasattr(aval, "vma"):  # jax < 0.9
        return frozenset(aval.vma)
    return frozenset(getattr(getattr(aval, "manual_axis_type", None), "varying", ()))


def _varying_like(w, x):
    """``w`` marked as varying over the named axes ``x`` varies over (inside ``shard_map``):
    a custom VJP must return each gradient with its input's type, and the weight gradient
    of a batch shard varies; the mark's transpose sums it over the axes, as for any conv."""
    missing = tuple(sorted(_varying_axes(x) - _varying_axes(w)))
    if not missing:
        return w
    if hasattr(jax.lax, "pvary"):
        return jax.lax.pvary(w, missing)
    return jax.lax.pcast(w, missing, to="varying")


def _plain_nhwc_padding(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                        feature_group_count, batch_group_count, preferred_element_type):
    """The explicit non-negative padding of an undilated, ungrouped NHWC x HWIO convolution
    (what ``few_channel_conv`` and the patches weight gradient take), else None."""
    if (lhs.ndim != 4 or preferred_element_type is not None
            or feature_group_count != 1 or batch_group_count != 1
            or any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))):
        return None
    nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    if lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != nhwc:
        return None
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    return padding if min(min(p) for p in padding) >= 0 else None


def _few_channel_padding(lhs, rhs, window_strides, *args):
    """The explicit padding when ``few_channel_conv`` can replace this convolution, else None."""
    pads = _plain_nhwc_padding(lhs, rhs, window_strides, *args)
    if pads is None or min(rhs.shape[2], rhs.shape[3]) > FEW_CHANNELS or any(s != 1 for s in window_strides):
        return None
    return pads


def _patches_padding(lhs, rhs, window_strides, *args):
    """The explicit padding when the weight gradient is to be one matmul of patches, else None."""
    pads = _plain_nhwc_padding(lhs, rhs, window_strides, *args)
    if pads is None:
        return None
    out_pixels = math.prod((size + lo + hi - k) // s + 1
                           for size, (lo, hi), k, s in zip(lhs.shape[1:3], pads, rhs.shape[:2], window_strides))
    patch_size = rhs.shape[0] * rhs.shape[1] * rhs.shape[2]
    return pads if out_pixels <= PATCHES_MAX_PIXELS and patch_size >= PATCHES_MIN_SIZE else None


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated`` with faster gradients on XLA:CPU: few-channel layers
    as matmuls, small maps' weight gradients as one matmul of patches, other weight
    gradients chunked over the batch."""
    conv = functools.partial(
        lax.conv_general_dilated, window_strides=window_strides, padding=padding,
        lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type)
    args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, preferred_element_type)
    pads = _few_channel_padding(*args)
    if pads is not None:
        return few_channel_conv(lhs, _varying_like(rhs, lhs), pads, precision)
    pads = _patches_padding(*args)
    if pads is not None:
        return _patches_weight_grad(conv, tuple(window_strides), pads, precision)(lhs, _varying_like(rhs, lhs))
    batch_axis = 0
    if dimension_numbers is not None:
        batch_axis = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers).lhs_spec[0]
    chunk = _chunk_size(lhs.shape[0], WEIGHT_GRAD_CHUNK)
    if batch_axis != 0 or batch_group_count != 1 or chunk == lhs.shape[0]:
        return conv(lhs, rhs)
    return _chunked_weight_grad(conv, chunk)(lhs, rhs)


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
"""``nn.Conv`` with the faster gradients of ``conv_general_dilated``; same parameters."""


# Which of a 3x3 kernel's rows (columns) act on each of the two input rows (columns) that
# an output row (column) of phase 0 / 1 sees after nearest-neighbour upsampling by 2.
_PHASE_TAPS = ((1, 0, 0), (0, 1, 1)), ((1, 1, 0), (0, 0, 1))


def upsample2_conv3x3(x: jnp.ndarray, kernel: jnp.ndarray, conv=conv_general_dilated) -> jnp.ndarray:
    """``conv3x3(upsample2(x))`` ('SAME' zero padding, nearest-neighbour upsampling by 2)
    without building the upsampled image: each of the output's four pixel phases is a
    2x2 convolution of ``x`` with sums of the 3x3 kernel's taps, so one 2x2 convolution
    with 4x the output channels computes them all (16 instead of 36 multiply-adds per
    input pixel and channel pair, on a quarter of the pixels), and the phases are
    interleaved. The same sum as the plain form, in a different order."""
    n, h, w, _ = x.shape
    cout = kernel.shape[-1]
    taps = jnp.asarray(_PHASE_TAPS, kernel.dtype)  # (phase, 2, 3)
    phased = jnp.einsum("aup,bvq,pqio->uvioab", taps, taps, kernel)  # (2, 2, in, out, a, b)
    phased = phased.reshape((*phased.shape[:3], cout * 4))
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    z = conv(padded, phased.astype(x.dtype), (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    z = z.reshape((n, h + 1, w + 1, cout, 2, 2))
    rows = [jnp.stack([z[:, a:a + h, b:b + w, :, a, b] for b in (0, 1)], axis=3).reshape((n, h, 2 * w, cout))
            for a in (0, 1)]
    return jnp.stack(rows, axis=2).reshape((n, 2 * h, 2 * w, cout))


UpsampleConv3x3 = functools.partial(layers.UpsampleConv, compute=upsample2_conv3x3)
"""``layers.UpsampleConv`` (same parameters) computed as one cheaper fused convolution."""


def max_pool(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """Non-overlapping ``size`` x ``size`` max pooling (NHWC, stride = size, no padding).
    When the image divides evenly it is a max over a reshape, whose gradient is one
    elementwise select; XLA's CPU gradient of ``reduce_window`` max goes through index
    arithmetic several times slower. Ties (equal values within a window) share the gradient
    instead of one of them taking it all."""
    n, h, w, c = x.shape
    if h % size or w % size:
        return nn.max_pool(x, (size, size), strides=(size, size))
    return jnp.max(x.reshape((n, h // size, size, w // size, size, c)), axis=(2, 4))


OPS = Ops(conv=Conv, upsample_conv=UpsampleConv3x3, max_pool=max_pool)
