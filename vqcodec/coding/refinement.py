"""Refinement layer: what lifts an image past the quantizer's ceiling (format version 6).

The residual quantizer's rounds stop paying above about 30 dB (its 128 block-PCA components
alone cap vqimage-v3i at 33.5 dB on Kodak), where uniform scalar steps keep paying
(docs/ablations.md, session 7). The refinement codes the decoded picture's error in pixels:

- an orthonormal colour rotation and 8x8 orthonormal DCT of the residual (original minus the
  8-bit decoded picture), so a uniform step costs the same squared error everywhere;
- uniform scalar quantization with a dead zone, step `step` in 8-bit levels;
- exact adaptive coding: each coefficient's magnitude under integer counts per context
  (colour channel, frequency band, the magnitudes of its already coded neighbours in
  frequency and in the first colour channel, and the activity coded so far in its block and
  in the four blocks around it), updated after every part of
  `refinement_part_size` blocks. The counts start from `refinement_counts.npy`, symbol
  frequencies measured on training photos (`vqcodec.train.refinement`); they are part of
  the format, like every constant here. Every table is a ratio of integers, so encoder and
  decoder compute the same ones on any machine without any network; the decoded picture
  itself (float, machine-dependent in its last bits) never enters a table.

Passes go coefficient by coefficient in zigzag order, channel by channel, over all blocks, so
every context a part needs was decoded in earlier passes or parts.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import CorruptPayloadError
from .entropy import IndexDecoder, IndexEncoder

BLOCK = 8
# Magnitudes 0..LITERALS-1 are symbols; LITERALS is an escape followed by the rest in
# ESCAPE_BITS uniform bits. With steps >= MIN_STEP no coefficient exceeds 2^13: a block's
# colour-rotated residual is at most 255 * sqrt(3) per pixel and an orthonormal 8x8 DCT basis
# function at most 1/4 in magnitude (1/8 for DC), so |c| <= 64 * 441.7 / 4 < 7100.
LITERALS = 17
ESCAPE_BITS = 13
MIN_STEP = 1.0
# Counts: each coded symbol adds INCREMENT to its context's row; a row is halved once its sum
# passes LIMIT (every count stays >= 1), which keeps sums exact and lets the tables follow.
INCREMENT = 32
LIMIT = 1 << 16
DEAD_ZONE = 0.35  # rounding offset of the quantizer: magnitudes are floor(|c| / step + 0.35)
MIN_PART = 256  # blocks per part at least; more for large images (PARTS_PER_PASS)
PARTS_PER_PASS = 16
BAND_BLOCKS = 8192  # blocks per band of the transforms (memory, not format)

# Orthonormal colour rotation: the mean of R, G, B and two chroma differences.
COLOUR = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], dtype=np.float64)
COLOUR /= np.linalg.norm(COLOUR, axis=1, keepdims=True)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


DCT = _dct_matrix(BLOCK)


def _zigzag(n: int) -> list[tuple[int, int]]:
    return sorted(((u, v) for u in range(n) for v in range(n)),
                  key=lambda uv: (uv[0] + uv[1], uv[1] if (uv[0] + uv[1]) % 2 else uv[0]))


ZIGZAG = _zigzag(BLOCK)
# Frequency band of each zigzag position (contexts are shared within a band).
BAND_EDGES = (1, 3, 6, 10, 15, 21, 28, 36, 64)
BANDS = np.searchsorted(np.array(BAND_EDGES), np.arange(BLOCK * BLOCK), side="right")
NEIGHBOUR_BUCKETS = np.array([0, 1, 2, 3, 3, 4, 4, 4, 5])  # of min(|a| + |b|, 8)
CROSS_BUCKETS = np.array([0, 1, 2, 2])  # of min(|first channel|, 3)
# Activity: the sum of a block's magnitudes coded so far in its channel (its own), and half
# the sum of its four neighbour blocks' (spatial); buckets 0 | 1 | 2-3 | 4-7 | 8+.
ACTIVITY_EDGES = np.array([1, 2, 4, 8])
ACTIVITY_BUCKETS = len(ACTIVITY_EDGES) + 1
NUM_CONTEXTS = 3 * len(BAND_EDGES) * 6 * 3 * ACTIVITY_BUCKETS * ACTIVITY_BUCKETS


def forward_transform(residual: np.ndarray) -> np.ndarray:
    """Residual [H, W, 3] (float, 8-bit levels) -> coefficients [3, H/8, W/8, 8, 8]; H and W
    must be multiples of 8."""
    h, w, _ = residual.shape
    y = residual.reshape(h * w, 3) @ COLOUR.T
    y = y.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK, 3).transpose(4, 0, 2, 1, 3)
    return np.einsum("ui,cabij,vj->cabuv", DCT, y, DCT, optimize=True)


def inverse_transform(coefficients: np.ndarray) -> np.ndarray:
    """The inverse of `forward_transform`."""
    c, bh, bw = coefficients.shape[:3]
    y = np.einsum("ui,cabuv,vj->cabij", DCT, coefficients, DCT, optimize=True)
    y = y.transpose(1, 3, 2, 4, 0).reshape(bh * BLOCK * bw * BLOCK, 3)
    return (y @ COLOUR).reshape(bh * BLOCK, bw * BLOCK, 3)


def quantize(coefficients: np.ndarray, step: float) -> np.ndarray:
    """Magnitudes floor(|c| / step + DEAD_ZONE) with their signs, int16 (|q| < 2^13)."""
    mag = np.floor(np.abs(coefficients) / step + DEAD_ZONE)
    return (np.sign(coefficients) * mag).astype(np.int16)


def _as_rgb(picture: np.ndarray) -> np.ndarray:
    return np.repeat(picture[..., None], 3, axis=2) if picture.ndim == 2 else picture


def block_grid(height: int, width: int) -> tuple[int, int]:
    """(block rows, blocks per row) of a picture: its 8x8 blocks, the last ones padded."""
    return -(-height // BLOCK), -(-width // BLOCK)


def _band_rows(grid_w: int) -> int:
    """Block rows per band of the transforms, so that their float64 temporaries stay near
    BAND_BLOCKS blocks (about 40 MiB) on any image."""
    return max(1, BAND_BLOCKS // grid_w)


def _bands(height: int, width: int):
    """(first pixel row, end pixel row, first block, end block) of each band."""
    bh, bw = block_grid(height, width)
    rows = _band_rows(bw)
    for first in range(0, bh, rows):
        end = min(first + rows, bh)
        yield first * BLOCK, min(end * BLOCK, height), first * bw, end * bw


def _pad(residual: np.ndarray) -> np.ndarray:
    h, w = residual.shape[:2]
    return np.pad(residual, ((0, -h % BLOCK), (0, -w % BLOCK), (0, 0)), mode="edge")


def quantize_residual(original: np.ndarray, picture: np.ndarray, step: float) -> np.ndarray:
    """The quantized coefficients [3, blocks, 8, 8] (int16, blocks in raster order) of
    original minus picture (uint8, HxWx3 or HxW as three equal channels), band by band."""
    height, width = picture.shape[:2]
    bh, bw = block_grid(height, width)
    out = np.empty((3, bh * bw, BLOCK, BLOCK), dtype=np.int16)
    for top, bottom, first, end in _bands(height, width):
        residual = (_as_rgb(original[top:bottom]).astype(np.float64)
                    - _as_rgb(picture[top:bottom]))
        coefficients = forward_transform(_pad(residual))
        out[:, first:end] = quantize(coefficients, step).reshape(3, end - first, BLOCK, BLOCK)
    return out


def refine(picture: np.ndarray, q: np.ndarray, step: float) -> np.ndarray:
    """The refined picture: `picture` (uint8 HxWx3, or HxW: refined by the residual's mean
    over colours, as a gray picture's three equal channels are) plus the inverse transform
    of q * step, rounded and clamped to 8 bits, band by band."""
    height, width = picture.shape[:2]
    bw = block_grid(height, width)[1]
    out = np.empty_like(picture)
    for top, bottom, first, end in _bands(height, width):
        band = q[:, first:end].reshape(3, -1, bw, BLOCK, BLOCK) * float(step)
        residual = inverse_transform(band)[:bottom - top, :width]
        if picture.ndim == 2:
            residual = residual.mean(axis=2)
        out[top:bottom] = np.clip(np.round(picture[top:bottom] + residual), 0, 255)
    return out


def refinement_part_size(blocks: int) -> int:
    """Blocks per part of a pass: at least MIN_PART, and at most PARTS_PER_PASS parts."""
    return max(MIN_PART, -(-blocks // PARTS_PER_PASS))


INITIAL_COUNTS_FILE = Path(__file__).with_name("refinement_counts.npy")
# What each context's starting counts sum to, in coded symbols' worth of INCREMENT: measured on
# BSDS500 test photos, 64 beat 256 and 1024 (docs/ablations.md, session 11).
INITIAL_SYMBOLS = 64


def initial_counts_from(histogram: np.ndarray) -> np.ndarray:
    """Starting counts [NUM_CONTEXTS, LITERALS + 1] from symbol frequencies per context:
    each row scaled to about INITIAL_SYMBOLS * INCREMENT, every count >= 1."""
    h = np.asarray(histogram, dtype=np.float64) + 0.5
    scaled = np.round(h / h.sum(axis=1, keepdims=True) * INITIAL_SYMBOLS * INCREMENT)
    return np.maximum(1, scaled).astype(np.uint16)


@lru_cache(maxsize=1)
def _shipped_counts() -> np.ndarray:
    counts = np.load(INITIAL_COUNTS_FILE, allow_pickle=False)
    if counts.shape != (NUM_CONTEXTS, LITERALS + 1) or counts.min() < 1:
        raise RuntimeError(f"{INITIAL_COUNTS_FILE} does not hold the refinement's counts")
    return counts.astype(np.int64)


def _initial_counts() -> np.ndarray:
    return _shipped_counts().copy()


def _activity_bucket(a: np.ndarray) -> np.ndarray:
    return np.searchsorted(ACTIVITY_EDGES, a, side="right")


def _contexts(q: np.ndarray, k: int, ch: int, activity: np.ndarray,
              grid_width: int) -> np.ndarray:
    """Context of every block's coefficient k (zigzag) in channel ch, from magnitudes coded
    before: [blocks] int.

    Args:
        q: [3, blocks, 8, 8] magnitudes, those coded so far at least.
        k, ch: the pass.
        activity: [blocks] the sum of each block's magnitudes coded so far in channel ch.
        grid_width: blocks per row (the raster order's width).
    """
    u, v = ZIGZAG[k]
    n = np.zeros(q.shape[1], dtype=np.int64)
    if u:
        n += q[ch, :, u - 1, v]
    if v:
        n += q[ch, :, u, v - 1]
    ctx = NEIGHBOUR_BUCKETS[np.minimum(n, 8)]
    cross = CROSS_BUCKETS[np.minimum(q[0, :, u, v], 3)] if ch else np.zeros_like(ctx)
    a = activity.reshape(-1, grid_width)
    around = np.zeros_like(a)
    around[:, 1:] += a[:, :-1]
    around[:, :-1] += a[:, 1:]
    around[1:] += a[:-1]
    around[:-1] += a[1:]
    ctx = ((ch * len(BAND_EDGES) + BANDS[k]) * 6 + ctx) * 3 + cross
    ctx = ctx * ACTIVITY_BUCKETS + _activity_bucket(activity)
    return ctx * ACTIVITY_BUCKETS + _activity_bucket(around.reshape(-1) // 2)


def _walk(mags: np.ndarray, grid_width: int, code, histogram: np.ndarray | None = None,
          counts: np.ndarray | None = None) -> None:
    """Visit every part of every pass in coding order: `code(table, k, ch, part)` gets the
    tables of a part's blocks (a slice of the raster order) and returns their magnitudes,
    written into `mags` ([3, blocks, 8, 8]; the encoder's are there already); each part's
    symbols are counted before the next part's tables are made (and into `histogram`,
    [NUM_CONTEXTS, LITERALS + 1], when given). `grid_width`: blocks per row; `counts`: the
    starting counts (default: the shipped ones)."""
    blocks = mags.shape[1]
    part_size = refinement_part_size(blocks)
    counts = _initial_counts() if counts is None else np.array(counts, dtype=np.int64)
    activity = np.zeros((3, blocks), dtype=np.int64)
    for k in range(BLOCK * BLOCK):
        u, v = ZIGZAG[k]
        for ch in range(3):
            ctx_all = _contexts(mags, k, ch, activity[ch], grid_width)
            for start in range(0, blocks, part_size):
                part = slice(start, min(start + part_size, blocks))
                ctx = ctx_all[part]
                rows = counts[ctx]
                table = rows / rows.sum(axis=1, keepdims=True)
                m = code(table, k, ch, part)
                mags[ch, part, u, v] = m
                sym = np.minimum(m, LITERALS)
                np.add.at(counts, (ctx, sym), INCREMENT)
                if histogram is not None:
                    np.add.at(histogram, (ctx, sym), 1)
                full = np.unique(ctx[counts[ctx].sum(axis=1) > LIMIT])
                counts[full] = (counts[full] + 1) // 2
            activity[ch] += mags[ch, :, u, v]


_SIGN_TABLE = np.full((1, 2), 0.5)
_ESCAPE_TABLE = np.full((1, 1 << ESCAPE_BITS), 1.0 / (1 << ESCAPE_BITS))


def encode_refinement(original: np.ndarray, picture: np.ndarray, step: float, *,
                      histogram: np.ndarray | None = None,
                      counts: np.ndarray | None = None) -> tuple[bytes, float, np.ndarray]:
    """Code what `picture` (the decoder's, uint8) misses of `original` (uint8, same shape;
    HxWx3, or HxW for gray).

    Args:
        original, picture: the two pictures.
        step: the quantizer's step in 8-bit levels (>= MIN_STEP).
        histogram: [NUM_CONTEXTS, LITERALS + 1], counts the coded symbols per context
            (for `vqcodec.train.refinement`).
        counts: starting counts other than the shipped ones (training them: a stream made
            with other counts decodes with those only).

    Returns:
        (stream, its ideal length in bits, the refined picture the decoder will return).
    """
    if not step >= MIN_STEP:
        raise ValueError(f"refinement step must be at least {MIN_STEP}, got {step}")
    q = quantize_residual(original, picture, step)
    mags = np.abs(q)
    encoder = IndexEncoder()
    bits = 0.0

    def code(table, k, ch, part):
        nonlocal bits
        u, v = ZIGZAG[k]
        m = mags[ch, part, u, v].astype(np.int64)
        sym = np.minimum(m, LITERALS)
        encoder.add(sym, table)
        bits -= float(np.log2(table[np.arange(len(sym)), sym]).sum())
        esc = m[m >= LITERALS] - LITERALS
        if len(esc):
            encoder.add(esc, np.repeat(_ESCAPE_TABLE, len(esc), axis=0))
            bits += ESCAPE_BITS * len(esc)
        signs = (q[ch, part, u, v][m > 0] < 0).astype(np.int64)
        if len(signs):
            encoder.add(signs, np.repeat(_SIGN_TABLE, len(signs), axis=0))
            bits += len(signs)
        return m

    _walk(mags, block_grid(*picture.shape[:2])[1], code, histogram, counts)
    return encoder.finish(), bits, refine(picture, q, step)


def decode_refinement(stream: bytes, step: float, picture: np.ndarray) -> np.ndarray:
    """The refined picture: `picture` (the decoded one, uint8) and its refinement stream
    (untrusted)."""
    height, width = picture.shape[:2]
    bh, bw = block_grid(height, width)
    blocks = bh * bw
    decoder = IndexDecoder(stream, num_codes=1 << ESCAPE_BITS)
    mags = np.zeros((3, blocks, BLOCK, BLOCK), dtype=np.int16)
    signed = np.zeros_like(mags)

    def code(table, k, ch, part):
        u, v = ZIGZAG[k]
        m = decoder.read(table)
        if m.max(initial=0) > LITERALS:
            raise CorruptPayloadError("corrupted refinement stream: magnitude out of range")
        esc = m >= LITERALS
        if esc.any():
            m[esc] += decoder.read(np.repeat(_ESCAPE_TABLE, int(esc.sum()), axis=0))
        s = m.copy()
        nz = m > 0
        if nz.any():
            neg = decoder.read(np.repeat(_SIGN_TABLE, int(nz.sum()), axis=0)).astype(bool)
            s[np.flatnonzero(nz)[neg]] *= -1
        signed[ch, part, u, v] = s
        return m

    _walk(mags, bw, code)
    return refine(picture, signed, step)
