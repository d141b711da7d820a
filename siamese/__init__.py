"""Siamese speaker embeddings and the diarization pipeline built on them."""

from siamese.diarizer import Diarizer, DiarizerSettings
from siamese.layers import EuclideanDistance
from siamese.losses import ContrastiveLoss
from siamese.metrics import PairAccuracy
from siamese.model import build_siamese

__all__ = ["Diarizer", "DiarizerSettings", "EuclideanDistance", "ContrastiveLoss", "PairAccuracy", "build_siamese"]
