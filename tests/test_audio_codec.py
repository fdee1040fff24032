"""Audio pipeline on a tiny random model: exact index round trips, rates, shapes, refusals."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vqcodec.pipelines import audio as audio_codec
from vqcodec.pipelines.audio import (compress_audio, decompress_audio, expected_frames,
                                       stages_for_bitrate)
from vqcodec.io.audio import AudioClip, resample
from vqcodec.format import ContainerError, pack_container, unpack_container
from vqcodec.coding.frame_codec import FrameByFrameCodec
from vqcodec.zoo.registry import ModelError

from conftest import TINY_AUDIO_CONFIG
from vqcodec.coding import file_codec


def tone(rate: int, n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    t = np.arange(n) / rate
    g = np.random.default_rng(seed)
    x = [0.4 * np.sin(2 * np.pi * (220 + 50 * c) * t) + 0.05 * g.standard_normal(n)
         for c in range(channels)]
    return np.stack(x).astype(np.float32)


@pytest.mark.parametrize("channels,stages,frames", [(1, 1, 1), (1, 4, 30), (2, 3, 25)])
def test_frame_codec_exact(tiny_audio_model, channels, stages, frames):
    """Random indices (not just the ones an encoder makes) survive, across chunk borders
    (context 12 frames)."""
    codec = file_codec(tiny_audio_model.model)
    g = torch.Generator().manual_seed(frames)
    idx = torch.randint(0, TINY_AUDIO_CONFIG.num_codes, (channels, stages, frames), generator=g)
    coded = codec.compress(idx)
    back = codec.decompress(coded.payload, channels, stages, frames)
    assert torch.equal(back, idx)
    assert coded.payload_bits >= coded.nll_bits - 1


def test_stream_nll_equals_training_forward(tiny_audio_model):
    """Within one chunk the frame-by-frame walk scores exactly what the parallel forward does."""
    prior = tiny_audio_model.model.prior
    idx = torch.randint(0, 16, (1, 3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        parallel = -prior(idx).sum().item()
    walked = FrameByFrameCodec(prior=prior).compress(idx).nll_bits
    assert walked == pytest.approx(parallel, rel=1e-4)


@pytest.mark.parametrize("rate,n,channels", [
    (8000, 1, 1), (8000, 39, 1), (8000, 41, 1), (8000, 4000, 2), (44100, 10000, 1),
    (16000, 12345, 2), (48000, 2000, 1)])
def test_round_trip_shapes_and_exact_indices(tiny_audio_model, rate, n, channels, monkeypatch):
    x = tone(rate, n, channels)
    seen = {}
    real = file_codec(tiny_audio_model.model).compress

    def spy(indices):
        seen["indices"] = indices.clone()
        return real(indices)

    monkeypatch.setattr(file_codec(tiny_audio_model.model), "compress", spy)
    result = compress_audio((x, rate), model=tiny_audio_model, device="cpu")
    header, payload = unpack_container(result.data)
    assert header.shape == (channels, n) and header.sample_rate == rate
    monkeypatch.undo()
    decoded_indices = file_codec(tiny_audio_model.model).decompress(
        payload, channels, header.num_stages, header.latent_shape[1])
    assert torch.equal(decoded_indices, seen["indices"])
    clip = decompress_audio(result.data, model=tiny_audio_model, device="cpu")
    assert clip.samples.shape == (channels, n) and clip.sample_rate == rate
    assert clip.samples.dtype == np.float32 and np.abs(clip.samples).max() <= 1
    assert header.latent_shape == (channels, expected_frames(
        n, rate, TINY_AUDIO_CONFIG.sample_rate, TINY_AUDIO_CONFIG.hop))


def test_expected_frames_matches_resampler():
    for rate, n in [(44100, 1), (44100, 10001), (22050, 777), (96000, 5)]:
        got = resample(np.zeros((1, n), np.float32), rate, 8000).shape[1]
        assert expected_frames(n, rate, 8000, 40) == -(-got // 40)


def test_windows_do_not_change_the_result(tiny_audio_model, monkeypatch):
    """Encoding/decoding window by window (with margins) equals doing it in one piece."""
    x = tone(8000, 8000)
    whole = compress_audio((x, 8000), model=tiny_audio_model, device="cpu")
    monkeypatch.setattr(audio_codec, "WINDOW_SECONDS", 0.1)  # 20 frames per window
    windowed = compress_audio((x, 8000), model=tiny_audio_model, device="cpu")
    assert windowed.data == whole.data
    a = decompress_audio(whole.data, model=tiny_audio_model, device="cpu").samples
    monkeypatch.undo()
    b = decompress_audio(whole.data, model=tiny_audio_model, device="cpu").samples
    assert np.abs(a - b).max() < 1e-5


def test_bitrates(tiny_audio_model):
    frame_rate = TINY_AUDIO_CONFIG.autoencoder.frame_rate  # 200 Hz, 4 bits per code
    assert stages_for_bitrate(tiny_audio_model, 0.8) == 1
    assert stages_for_bitrate(tiny_audio_model, 3.2) == 4
    assert stages_for_bitrate(tiny_audio_model, None) == 2
    with pytest.raises(ModelError, match="0.8, 1.6, 3.2"):
        stages_for_bitrate(tiny_audio_model, 6)
    x = tone(8000, 8000)
    small = compress_audio((x, 8000), model=tiny_audio_model, bitrate=0.8, device="cpu")
    big = compress_audio((x, 8000), model=tiny_audio_model, bitrate=3.2, device="cpu")
    assert small.raw_kbps == pytest.approx(4 * frame_rate / 1000)
    assert len(big.data) > len(small.data)
    assert big.payload_bytes * 8 >= big.nll_bits - 1


def test_int16_and_mono_arrays(tiny_audio_model):
    x = (tone(8000, 800)[0] * 32767).astype(np.int16)
    clip = decompress_audio(compress_audio((x, 8000), model=tiny_audio_model,
                                           device="cpu").data, model=tiny_audio_model)
    assert clip.samples.shape == (1, 800)


def test_refusals(tiny_audio_model, tiny_model):
    x = tone(8000, 800)
    data = compress_audio((x, 8000), model=tiny_audio_model, device="cpu").data
    with pytest.raises(ModelError, match="not an image"):
        from vqcodec.pipelines.image import decompress_image
        decompress_image(data, model=tiny_audio_model)
    with pytest.raises(ModelError, match="image model, not an audio model"):
        compress_audio((x, 8000), model=tiny_model)
    with pytest.raises(ContainerError):
        decompress_audio(data[:-3], model=tiny_audio_model)
    bad = bytearray(data)
    bad[-10] ^= 0xFF
    with pytest.raises(ContainerError):
        decompress_audio(bytes(bad), model=tiny_audio_model)
    with pytest.raises(ModelError, match="made by model"):
        decompress_audio(data, model=tiny_model)
    header, payload = unpack_container(data)
    for change in ({"sample_rate": 10}, {"shape": (9, 800)}, {"latent_shape": (1, 7)},
                   {"num_stages": 9}):
        forged = pack_container(dataclasses.replace(header, **change), payload)
        with pytest.raises(ModelError, match="inconsistent"):
            decompress_audio(forged, model=tiny_audio_model)


def test_clip_type(tiny_audio_model):
    clip = AudioClip(samples=tone(8000, 500, 2), sample_rate=8000)
    out = decompress_audio(compress_audio(clip, model=tiny_audio_model).data,
                           model=tiny_audio_model)
    assert out.channels == 2 and out.num_samples == 500


def test_python_api(tiny_audio_model_path):
    import vqcodec
    x = tone(16000, 3000, 2)
    data = vqcodec.compress_audio(x, 16000, bitrate=1.6, model=tiny_audio_model_path,
                                  device="cpu")
    samples, rate = vqcodec.decompress_audio(data, model=tiny_audio_model_path)
    assert samples.shape == (2, 3000) and rate == 16000


def test_file_read_in_windows_codes_as_the_clip(tiny_audio_model, tmp_path, monkeypatch):
    """A file read and resampled window by window (`AudioReader`) codes to the same bytes as
    the clip in memory, and decoding to a file window by window writes what decoding to a
    clip and saving it writes."""
    from vqcodec.io.audio import AudioReader, load_audio, save_audio
    from vqcodec.pipelines.audio import decompress_audio_to_file
    monkeypatch.setattr(audio_codec, "WINDOW_SECONDS", 0.1)  # many windows in 0.7 s
    path = tmp_path / "in.wav"
    save_audio(path, tone(44100, 30000, channels=2), 44100)
    in_memory = compress_audio(load_audio(path), model=tiny_audio_model, device="cpu").data
    with AudioReader(path) as reader:
        streamed = compress_audio(reader, model=tiny_audio_model, device="cpu").data
    assert streamed == in_memory
    info = decompress_audio_to_file(streamed, tmp_path / "out.wav", model=tiny_audio_model)
    assert (info.channels, info.sample_rate, info.num_samples) == (2, 44100, 30000)
    save_audio(tmp_path / "whole.wav", decompress_audio(streamed, model=tiny_audio_model))
    assert (tmp_path / "out.wav").read_bytes() == (tmp_path / "whole.wav").read_bytes()


def test_windowed_resampling_codes_as_whole_signal_resampling(tiny_audio_model):
    """Resampling window by window changes the encoder's input only by float rounding."""
    from vqcodec.pipelines.audio import encode_audio, encode_channel, model_input
    net = tiny_audio_model.model
    x = tone(44100, 30000, channels=2)
    whole = torch.stack([encode_channel(net, model_input(c, 44100, net), 4) for c in x])
    windowed = encode_audio(net, AudioClip(x, 44100), 4, torch.device("cpu"))
    assert windowed.shape == whole.shape
    assert (windowed == whole).float().mean() > 0.99
