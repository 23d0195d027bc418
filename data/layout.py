"""The challenge's layout: image shape and classes. The one owner of these constants (models/ and the
service import them); no numpy here, so `tune --help` can name the classes without loading it."""

from __future__ import annotations

IMAGE_SHAPE = (64, 128)  # (height, width) of every rover image and mask
NUM_CLASSES = 5
CLASS_NAMES = ("background", "soil", "bedrock", "sand", "big_rock")  # index = label value
BACKGROUND = 0  # the class the challenge leaves out of its score (mean IoU over classes 1..4)
