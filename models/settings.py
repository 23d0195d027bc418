"""Pix2Pix's training settings, without Keras: the final run reads them before TensorFlow loads."""

from __future__ import annotations

# lambda of pix2pix. The seed report's logs (G 2.85 = Adv 1.02 + lambda x Seg 0.018) imply 100, the
# paper's value: segmentation dominates, the adversarial term sharpens boundaries.
SEG_WEIGHT = 100.0
LEARNING_RATE = 2e-4  # pix2pix's Adam settings: a low rate and beta1 = 0.5 keep the two players stable
BETA_1 = 0.5
