"""Entropy coding: count tables and the range coder (`entropy`), context schedules
(`context`), and one latent codec per kind of latent, each with `forward` (log2-likelihoods for
training), `compress` and `decompress` (as CompressAI's latent codecs).

`latent_codec(net)` is the codec over a model's own prior (for training and evaluation, on the
model's device); `file_codec(net)` is the one that writes and reads files: always on the CPU,
so a file made with `--device cuda` decodes on a CPU.
"""
from __future__ import annotations

import copy
import weakref

from torch import nn

from .frame_codec import FrameByFrameCodec
from .latent_codec import GroupedStageCodec, StageByStageCodec

__all__ = ["latent_codec", "file_codec", "rate_codec", "FrameByFrameCodec", "StageByStageCodec",
           "GroupedStageCodec"]

# Keyed weakly by the model, so a codec lives as long as its model and no longer.
_FILE_CODECS: "weakref.WeakKeyDictionary[nn.Module, object]" = weakref.WeakKeyDictionary()


def latent_codec(net: nn.Module):
    """The latent codec over `net`'s prior (and quantizer), sharing its weights."""
    if net.kind == "audio":
        return FrameByFrameCodec(prior=net.prior)
    if net.config.num_groups:
        return GroupedStageCodec(prior=net.prior, quantizer=net.quantizer)
    return StageByStageCodec(prior=net.prior, quantizer=net.quantizer)


def file_codec(net: nn.Module):
    """The codec that writes and reads `net`'s files (on the CPU, cached per model): over its
    exact integer prior when it has one (portable files), else over its float prior."""
    codec = _FILE_CODECS.get(net)
    if codec is None:
        cpu_net = net if next(net.parameters()).device.type == "cpu" else copy.deepcopy(net).cpu()
        codec = _FILE_CODECS[net] = (latent_codec(cpu_net) if cpu_net.integer_prior is None
                                     else _integer_codec(cpu_net))
    return codec


def rate_codec(net: nn.Module):
    """The codec whose likelihoods are the rate of `net`'s files, for evaluation: the file
    codec over its exact integer prior when it has one (on the CPU), else `latent_codec(net)`
    on the model's device (the file codec's float tables, up to rounding)."""
    return latent_codec(net) if net.integer_prior is None else file_codec(net)


def _integer_codec(net: nn.Module):
    if net.kind == "audio":
        from .frame_codec import IntegerFrameCodec
        return IntegerFrameCodec(prior=net.integer_prior)
    from .latent_codec import IntegerStageCodec
    return IntegerStageCodec(prior=net.integer_prior, quantizer=net.quantizer)
