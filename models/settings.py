"""Settings of the models that the service reads before TensorFlow loads (no Keras here): Pix2Pix's
training settings, and the names and parameters of the losses (models/losses.py builds them)."""

from __future__ import annotations

# lambda of pix2pix. The seed report's logs (G 2.85 = Adv 1.02 + lambda x Seg 0.018) imply 100, the
# paper's value: segmentation dominates, the adversarial term sharpens boundaries.
SEG_WEIGHT = 100.0
LEARNING_RATE = 2e-4  # pix2pix's Adam settings: a low rate and beta1 = 0.5 keep the two players stable
BETA_1 = 0.5

# The losses a study can search (models/losses.py: LOSSES has exactly these names).
LOSS_NAMES = ("crossentropy", "weighted_crossentropy", "focal", "dice_crossentropy")
# Which of build_loss's arguments change each loss, so a search space can sample them conditionally.
LOSS_PARAMETERS: dict[str, tuple[str, ...]] = {
    "crossentropy": (),
    "weighted_crossentropy": ("class_weights",),
    "focal": ("class_weights", "focal_gamma"),
    "dice_crossentropy": ("class_weights",),
}
FOCAL_GAMMA = 2.0  # Lin et al.'s best value; the search varies it
