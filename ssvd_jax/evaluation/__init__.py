"""ImageNet VID evaluation: the ILSVRC protocol, FGFA's motion-speed buckets and Seq-NMS.

Pure numpy (no JAX, no TensorFlow). Modules: `vid_ap` (detections and ground truth containers,
the devkit's matching, AP and mAP; VID_PROTOCOL §1), `motion` (motion IoU and slow/medium/fast
AP; §2), `seq_nms` (FGFA's Seq-NMS; §3), `results` (devkit result files and JSON summaries),
`score` (`score_detections`: a result file against an ILSVRC annotation folder, for
`main.py --mode=score`; `score_tracks` likewise for track files). Tracks (docs/TRACK_PROTOCOL.md):
`tracks` (detections with track ids, grouped per video), `linking` (Viterbi tube linking, or
Seq-NMS's paths), `track_ap` (the devkit's mAP_track), `stability` (Zhang & Wang's errors of
matched tracks), `track_results` (track files). The Seq-NMS entry point is `seq_nms.seq_nms`
(not re-exported here, so the name keeps meaning the module).
"""

from ssvd_jax.evaluation.motion import MotionResult, evaluate_motion
from ssvd_jax.evaluation.results import read_detections, write_detections, write_summary
from ssvd_jax.evaluation.score import load_ground_truth, score_detections
from ssvd_jax.evaluation.vid_ap import Detections, GroundTruth, VidResult, evaluate_vid

__all__ = [
    "Detections",
    "GroundTruth",
    "MotionResult",
    "VidResult",
    "evaluate_motion",
    "evaluate_vid",
    "load_ground_truth",
    "read_detections",
    "score_detections",
    "write_detections",
    "write_summary",
]
