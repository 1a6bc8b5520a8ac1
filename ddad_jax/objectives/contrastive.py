"""CMI's contrastive term: instance discrimination of synthetic images through the teacher.

Each synthetic image is seen twice, a *global* view (crop + flip) and a *local* one (a random
resized crop of 25-100 % of its area, + flip). Its instance features -- the per-image
spatial mean of the input of every teacher BatchNorm layer, concatenated -- go through a
small trained head (``models.ContrastHead``: an MLP onto the unit sphere). The local view of
image ``i`` must pick out its own global view among those of the current batch and of past
syntheses kept in a memory bank (InfoNCE at a temperature). Minimised by the generator, it
pushes every new image away from the others and from everything synthesised before: the
batches stay diverse across rounds.

As in the reference code (``docs/reference/datafree_methods.md`` section 6.2): the global
views' projections are constants (no gradient), the bank stores raw instance features of
both views, and the loss is the mean over the current images' rows plus, once the bank holds
anything, the mean over the cached rows.
"""

from typing import NamedTuple, Optional

import flax
import jax
import jax.numpy as jnp

from ddad_jax import parallel


def nce_rows(rows: jnp.ndarray, cols: jnp.ndarray, positives: jnp.ndarray, valid_cols: jnp.ndarray,
             temperature: float) -> jnp.ndarray:
    """Per-row InfoNCE loss ``logsumexp_j(r.c_j / T) - r.c_pos / T`` of unit vectors ``rows``
    (m, d) against ``cols`` (M, d); ``positives`` (m,) the column of each row's positive;
    columns not ``valid_cols`` (unused bank entries) are no negatives."""
    logits = jnp.where(valid_cols[None, :], (rows @ cols.T) / temperature, -1e9)
    return jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, positives[:, None], axis=-1)[:, 0]


def info_nce(local: jnp.ndarray, global_: jnp.ndarray, num_current: int, valid: jnp.ndarray,
             temperature: float) -> jnp.ndarray:
    """CMI's loss on one batch: rows ``local`` (M, d) against columns ``global_`` (M, d), row
    ``i``'s positive column ``i``; the first ``num_current`` are the current images, the rest
    cached, ``valid`` (M,) marking those in use. Mean over the current rows plus the mean over
    the valid cached rows (0 if none)."""
    per_row = nce_rows(local, global_, jnp.arange(local.shape[0]), valid, temperature)
    return jnp.mean(per_row[:num_current]) + _cached_mean(per_row[num_current:], valid[num_current:])


def _cached_mean(per_row: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
    valid = valid.astype(jnp.float32)
    n = jnp.sum(valid)
    return jnp.where(n > 0, jnp.sum(per_row * valid) / jnp.maximum(n, 1.0), 0.0)


@flax.struct.dataclass
class Bank:
    """A ring buffer of past instance features: ``local`` and ``global_`` (size, D)."""
    local: jnp.ndarray
    global_: jnp.ndarray
    count: jnp.ndarray  # entries ever added (the next write is at ``count % size``)


def init_bank(size: int, dim: int) -> Optional[Bank]:
    if not size:
        return None
    return Bank(local=jnp.zeros((size, dim), jnp.float32), global_=jnp.zeros((size, dim), jnp.float32),
                count=jnp.zeros((), jnp.int32))


def bank_add(bank: Bank, local: jnp.ndarray, global_: jnp.ndarray) -> Bank:
    """Writes a batch of (n, D) features at the ring position (oldest overwritten)."""
    size, n = bank.local.shape[0], local.shape[0]
    rows = (bank.count + jnp.arange(n)) % size
    return Bank(local=bank.local.at[rows].set(local.astype(jnp.float32)),
                global_=bank.global_.at[rows].set(global_.astype(jnp.float32)), count=bank.count + n)


def bank_draw(rng, bank: Bank, num: int):
    """``num`` random entries (with replacement) of the filled part: (local, global_, valid);
    ``valid`` is all False while the bank is empty."""
    size = bank.local.shape[0]
    filled = jnp.minimum(bank.count, size)
    rows = jax.random.randint(rng, (num,), 0, jnp.maximum(filled, 1))
    valid = jnp.broadcast_to(filled > 0, (num,))
    return bank.local[rows], bank.global_[rows], valid


class Contrast(NamedTuple):
    """What the ``contrastive`` generator term needs (``objectives.Synthesis.contrast``):
    instance features of the current (global) batch's two views, drawn bank entries and the
    head (features -> unit vectors)."""
    local: jnp.ndarray  # (n, D) this replica's images, local views
    global_: jnp.ndarray  # (n, D) global views
    cached_local: jnp.ndarray  # (k, D) from the bank
    cached_global: jnp.ndarray
    cached_valid: jnp.ndarray  # (k,)
    head: object  # callable (m, D) -> (m, d), L2-normalised
    temperature: float


def contrastive(c: Contrast, axis_name=None) -> jnp.ndarray:
    """The term, ``info_nce`` over the global batch and the drawn bank entries: each replica
    scores its own images' rows against every replica's global views (gathered) and the
    bank's, so the negatives -- and the value -- do not depend on the device count."""
    n = c.local.shape[0]
    global_, offset = c.global_, 0
    if axis_name:
        global_, offset = parallel.gather_replicated(global_, axis_name), jax.lax.axis_index(axis_name) * n
    total = global_.shape[0]
    cols = jax.lax.stop_gradient(c.head(jnp.concatenate([global_, c.cached_global.astype(global_.dtype)])))
    valid = jnp.concatenate([jnp.ones((total,), bool), c.cached_valid])
    current = jnp.mean(nce_rows(c.head(c.local), cols, offset + jnp.arange(n), valid, c.temperature))
    if axis_name:
        current = jax.lax.pmean(current, axis_name)  # equal shards: the mean over the global batch
    k = c.cached_local.shape[0]
    cached = nce_rows(c.head(c.cached_local.astype(c.local.dtype)), cols, total + jnp.arange(k), valid, c.temperature)
    return current + _cached_mean(cached, c.cached_valid)
