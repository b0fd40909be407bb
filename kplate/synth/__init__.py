"""Synthetic Korean licence plates: texts, plate rendering, full scenes and crops.

``render_scene(seed, index)`` and ``render_crop(seed, index)`` are pure functions of their
arguments; ``write_dataset`` renders many in worker processes and writes ``labels.jsonl``.
"""

from kplate.synth.dataset import SynthJob, contact_sheet, read_labels, write_dataset
from kplate.synth.scene import PlateLabel, Sample, rectify, render_crop, render_scene

__all__ = [
    "PlateLabel",
    "Sample",
    "SynthJob",
    "contact_sheet",
    "read_labels",
    "rectify",
    "render_crop",
    "render_scene",
    "write_dataset",
]
