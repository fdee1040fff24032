"""Rate-distortion evaluation of our models against classical codecs, for images and audio.

One path for both media (as CompressAI's `utils/eval_model`):

* `items`: the images or clips of a folder (`load_items`);
* `model`: our model at every rate setting, batched through the pipelines' own steps, and
  with `actual` the real compress/decompress round trip (`evaluate_model`, `model_curve`);
* `baselines`: JPEG, WebP, AVIF, JPEG XL and Opus (`opus`) behind one `BaselineCodec` shape;
* `rd`: the per-item `RDRecord`, the `RDCurve` in CompressAI's JSON format, `summarize`, and
  the `Medium` that names units and keys (bpp / PSNR for images, kbps / SI-SNR for audio);
* `metrics`: PSNR, MS-SSIM, SI-SNR, mel distance, MSE;
* `references`: published CompressAI-format result files; `bd_rate`: Bjøntegaard delta rate;
* `report`: the JSON, CSV and plot files `rd-curve` writes (`plot`: the PNGs).
"""
