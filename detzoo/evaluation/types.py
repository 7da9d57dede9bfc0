"""The evaluation types, named once: COCOeval's ``iouType`` of detections (``IOU_TYPES``)
and the region proposals' average recall. They key ``detzoo.engine.evaluate``'s metrics
and a zoo run record's ``metrics`` (``EVAL_TYPES``)."""

BBOX = "bbox"
SEGM = "segm"
KEYPOINTS = "keypoints"
PROPOSALS = "proposals"
IOU_TYPES = (BBOX, SEGM, KEYPOINTS)
EVAL_TYPES = (*IOU_TYPES, PROPOSALS)
