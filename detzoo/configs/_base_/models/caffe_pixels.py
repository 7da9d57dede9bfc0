"""Caffe-format pixels: BGR 0-255 minus the ImageNet mean, std 1. The input format of
every Detectron checkpoint (MSRA R-50/R-101, FB ResNeXt X-101/X-152; Detectron has no
pixel std) and of mmdetection's caffe-style weights. Put it after the model base in
``_base_``. It sets pixels only; the block style is ``backbone.style`` (``resnet_caffe.py``)."""

model = dict(
    input_format="BGR",
    pixel_scale=1.0,
    pixel_mean=[103.53, 116.28, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
)
