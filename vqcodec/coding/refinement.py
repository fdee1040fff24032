"""Refinement layer: what lifts an image past the quantizer's ceiling (format version 6).

The residual quantizer's rounds stop paying above about 30 dB (its 128 block-PCA components
alone cap vqimage-v3i at 33.5 dB on Kodak), where uniform scalar steps keep paying
(docs/ablations.md, session 7). The refinement codes the decoded picture's error in pixels:

- an orthonormal colour rotation and 8x8 orthonormal DCT of the residual (original minus the
  8-bit decoded picture), so a uniform step costs the same squared error everywhere;
- uniform scalar quantization, step `step` in 8-bit levels, each magnitude then chosen by the
  encoder for its squared error plus rate (`RD_WEIGHT`) under the table it is coded with;
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

Since format version 7 the decoder then smooths the refined picture across its 8x8 block
edges (`deblock`, an H.264-style edge filter whose strength follows the step; it reads
decoded pixels only, so the stream is version 6's): on 12 BSDS500 test photos +0.23 dB at
step 72, +0.21 at 40, +0.17 at 26, and MS-SSIM a little higher (docs/ablations.md, session
13).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import CorruptPayloadError
from ..io.image import as_rgb
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
DEAD_ZONE = 0.5  # rounding offset of the quantizer: magnitudes are floor(|c| / step + 0.5)
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


def quantize_residual(original: np.ndarray, picture: np.ndarray, step: float,
                      offsets: np.ndarray | None = None) -> np.ndarray:
    """The quantized coefficients [3, blocks, 8, 8] (int16, blocks in raster order) of
    original minus picture (uint8, HxWx3 or HxW as three equal channels), band by band.
    `offsets` ([3, blocks, 8, 8] int8), when given, receives round(100 * (|c| / step - |q|)),
    how far each magnitude lies below its coefficient (-50..50 with DEAD_ZONE 0.5), for
    `encode_refinement`'s choice."""
    height, width = picture.shape[:2]
    bh, bw = block_grid(height, width)
    out = np.empty((3, bh * bw, BLOCK, BLOCK), dtype=np.int16)
    for top, bottom, first, end in _bands(height, width):
        residual = (as_rgb(original[top:bottom]).astype(np.float64)
                    - as_rgb(picture[top:bottom]))
        coefficients = forward_transform(_pad(residual))
        q = quantize(coefficients, step)
        out[:, first:end] = q.reshape(3, end - first, BLOCK, BLOCK)
        if offsets is not None:
            gap = np.abs(coefficients) / step - np.abs(q)
            offsets[:, first:end] = np.round(gap * 100).reshape(3, end - first, BLOCK, BLOCK)
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


# Deblocking (format version 7): an edge is filtered where the step across it and the slopes
# on either side are below DEBLOCK_LIMIT * step, each pixel changing by at most
# DEBLOCK_CLIP * step (half that one pixel further out). Chosen on 12 BSDS500 test photos
# (every 16th) refined over quality 3 at steps 72, 56, 40, 26: the best of 4 x 4 x 3 settings
# at every step, and choosing per photo would add at most 0.01 dB.
DEBLOCK_LIMIT = 1.0
DEBLOCK_CLIP = 0.05
DEBLOCK_ROWS = 128  # pixel rows filtered at once (bounds the temporaries, not the format)


def deblock(picture: np.ndarray, step: float) -> np.ndarray:
    """`picture` (uint8 HxWx3 or HxW, refined with `step`) smoothed across its 8x8 block
    edges. At an edge with pixels p1 p0 | q0 q1 on a row or column, where |q0 - p0|,
    |p1 - p0| and |q1 - q0| are all below DEBLOCK_LIMIT * step, p0 and q0 move towards each
    other by d = clip(((q0 - p0) * 4 + p1 - q1) / 8, +-DEBLOCK_CLIP * step), p1 and q1
    towards (p0 + q0) / 2 by half of that at most. Every change is computed from the picture
    as given (edges between columns and between rows alike), the changes of a pixel summed,
    the sum rounded once: exact float64 arithmetic on integers, so every machine gives the
    same pixels for the same input; in bands of rows, which give the same pixels."""
    image = picture[..., None] if picture.ndim == 2 else picture
    height = image.shape[0]
    out = np.empty_like(image, dtype=np.uint8)
    for top in range(0, height, DEBLOCK_ROWS):
        bottom = min(top + DEBLOCK_ROWS, height)
        # An edge changes the two rows on each side of it: the edges that touch the band's
        # rows lie within one row of it, and they read two rows further.
        lo, hi = max(0, top - 3), min(height, bottom + 3)
        x = image[lo:hi].astype(np.float64)
        change = np.zeros_like(x)
        _edge_changes(x, change, np.arange(BLOCK, x.shape[1] - 1, BLOCK), axis=1, step=step)
        rows = np.arange(BLOCK, height - 1, BLOCK)
        rows = rows[(rows + 1 >= top) & (rows - 2 < bottom)] - lo
        _edge_changes(x, change, rows, axis=0, step=step)
        band = np.clip(np.round(x + change), 0, 255)[top - lo:bottom - lo]
        out[top:bottom] = band
    return out[..., 0] if picture.ndim == 2 else out


def _edge_changes(x: np.ndarray, change: np.ndarray, edges: np.ndarray, *, axis: int,
                  step: float) -> None:
    """Add `deblock`'s changes at `edges` (between lines e - 1 and e along `axis` of x) to
    `change`."""
    lines, acc = np.moveaxis(x, axis, 0), np.moveaxis(change, axis, 0)
    if not len(edges):
        return
    limit, clip = DEBLOCK_LIMIT * step, DEBLOCK_CLIP * step
    p1, p0, q0, q1 = (lines[edges + k] for k in (-2, -1, 0, 1))
    on = (np.abs(q0 - p0) < limit) & (np.abs(p1 - p0) < limit) & (np.abs(q1 - q0) < limit)
    d = np.clip(((q0 - p0) * 4 + (p1 - q1)) / 8, -clip, clip) * on
    mid = (p0 + q0) / 2
    acc[edges - 2] += np.clip((mid - p1) / 2, -clip / 2, clip / 2) * on
    acc[edges - 1] += d
    acc[edges] -= d
    acc[edges + 1] += np.clip((mid - q1) / 2, -clip / 2, clip / 2) * on


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
    # Each row's sum, kept beside the rows (exact integers: a table is the same float
    # whichever way its sum was formed).
    totals = counts.sum(axis=1)
    activity = np.zeros((3, blocks), dtype=np.int64)
    for k in range(BLOCK * BLOCK):
        u, v = ZIGZAG[k]
        for ch in range(3):
            ctx_all = _contexts(mags, k, ch, activity[ch], grid_width)
            for start in range(0, blocks, part_size):
                part = slice(start, min(start + part_size, blocks))
                ctx = ctx_all[part]
                table = counts[ctx] / totals[ctx][:, None]
                m = code(table, k, ch, part)
                mags[ch, part, u, v] = m
                sym = np.minimum(m, LITERALS)
                np.add.at(counts, (ctx, sym), INCREMENT)
                np.add.at(totals, ctx, INCREMENT)
                if histogram is not None:
                    np.add.at(histogram, (ctx, sym), 1)
                over = totals[ctx] > LIMIT
                if over.any():
                    full = np.unique(ctx[over])
                    counts[full] = (counts[full] + 1) // 2
                    totals[full] = counts[full].sum(axis=1)
            activity[ch] += mags[ch, :, u, v]


# The encoder codes each magnitude as whichever of the quantizer's, one less or (if it is not
# 0) one more costs the least squared error (in steps^2) + RD_WEIGHT x its bits under the
# part's table (sign and escape bits included): greedy rate-distortion quantization in coding
# order. Encoder only (any choice decodes). 0: the quantizer as it is. Chosen with
# DEAD_ZONE on 12 BSDS500 test photos (benchmarks/refinement_base.py): BD-rate against WebP
# -2.82 % (dead zone 0.35, no choice) -> -4.90 % (0.35, weight 0.12) -> -6.04 % (0.5, 0.1).
RD_WEIGHT = 0.1


def _cheapest_magnitudes(m: np.ndarray, offsets: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Per block, the magnitude among m - 1 (>= 0), m and m + 1 (if m > 0) that minimises
    (x - magnitude)^2 + RD_WEIGHT * bits, x = m + offsets / 100 the coefficient's magnitude
    in steps; ties go to the smaller."""
    x = m + offsets.astype(np.float64) / 100
    # One more only where the sign is known (m > 0): a zero's sign was not kept.
    candidates = np.stack([np.maximum(m - 1, 0), m, np.where(m > 0, m + 1, 0)])
    rows = np.arange(len(m))
    p = table[rows, np.minimum(candidates, LITERALS)]
    bits = -np.log2(p) + (candidates > 0) + ESCAPE_BITS * (candidates >= LITERALS)
    cost = (x - candidates) ** 2 + RD_WEIGHT * bits
    return candidates[cost.argmin(0), rows]


_SIGN_TABLE = np.full((1, 2), 0.5)
_ESCAPE_TABLE = np.full((1, 1 << ESCAPE_BITS), 1.0 / (1 << ESCAPE_BITS))


def encode_refinement(original: np.ndarray, picture: np.ndarray, step: float, *,
                      deblocked: bool = True, histogram: np.ndarray | None = None,
                      counts: np.ndarray | None = None) -> tuple[bytes, float, np.ndarray]:
    """Code what `picture` (the decoder's, uint8) misses of `original` (uint8, same shape;
    HxWx3, or HxW for gray).

    Args:
        original, picture: the two pictures.
        step: the quantizer's step in 8-bit levels (>= MIN_STEP).
        deblocked: the decoder deblocks the refined picture (format version 7; version 6
            does not): only the picture returned depends on it, not the stream.
        histogram: [NUM_CONTEXTS, LITERALS + 1], counts the coded symbols per context
            (for `vqcodec.train.refinement`).
        counts: starting counts other than the shipped ones (training them: a stream made
            with other counts decodes with those only).

    Returns:
        (stream, its ideal length in bits, the refined picture the decoder will return).
    """
    if not step >= MIN_STEP:
        raise ValueError(f"refinement step must be at least {MIN_STEP}, got {step}")
    bh, bw = block_grid(*picture.shape[:2])
    offsets = np.empty((3, bh * bw, BLOCK, BLOCK), dtype=np.int8) if RD_WEIGHT else None
    q = quantize_residual(original, picture, step, offsets)
    mags = np.abs(q)
    encoder = IndexEncoder()
    bits = 0.0

    def code(table, k, ch, part):
        nonlocal bits
        u, v = ZIGZAG[k]
        m = mags[ch, part, u, v].astype(np.int64)
        if offsets is not None:
            m = _cheapest_magnitudes(m, offsets[ch, part, u, v], table)
            q[ch, part, u, v] = np.where(q[ch, part, u, v] < 0, -m, m)
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

    _walk(mags, bw, code, histogram, counts)
    return encoder.finish(), bits, apply_refinement(picture, q, step, deblocked=deblocked)


def apply_refinement(picture: np.ndarray, q: np.ndarray, step: float, *,
                     deblocked: bool = True) -> np.ndarray:
    """The refined picture from `picture` (uint8) and its quantized coefficients q ([3,
    blocks, 8, 8], signed), deblocked or not as the file's format version says (7: yes,
    6: no)."""
    refined = refine(picture, q, step)
    return deblock(refined, step) if deblocked else refined


def decode_refinement(stream: bytes, step: float, picture: np.ndarray, *,
                      deblocked: bool = True) -> np.ndarray:
    """The refined picture: `picture` (the decoded one, uint8) and its refinement stream
    (untrusted); `deblocked` as the file's format version says (7: yes, 6: no)."""
    q = decode_coefficients(stream, *picture.shape[:2])
    return apply_refinement(picture, q, step, deblocked=deblocked)


def decode_coefficients(stream: bytes, height: int, width: int) -> np.ndarray:
    """The quantized coefficients [3, blocks, 8, 8] (int16, signed) of a height x width
    picture's refinement stream (untrusted). No picture is needed: every table comes from
    counts of what was decoded before. (Reading them in a thread or a forked process beside
    the prior and the decoder did not pay on 2 cores: docs/ablations.md, session 16.)

    Raises:
        CorruptPayloadError: the stream does not fit.
    """
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
    return signed
