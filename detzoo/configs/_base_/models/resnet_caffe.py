"""Caffe-style ResNet (the ``_caffe`` in a config name): MSRA's R-50 / R-101 weights, with
the stride on the first 1x1 conv of each bottleneck, and caffe-format pixels."""

_base_ = "caffe_pixels.py"
model = dict(backbone=dict(style="caffe", init="detectron://MSRA/R-50.pkl"))
