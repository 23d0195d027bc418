"""Find and remove the contamination in the training pairs, automatically and with a report.

About 4% of the real training pairs are unrelated pictures that all carry ONE identical label mask. Real
terrain masks are never pixel-identical across many pairs, so the rule needs no hand-picked indices: hash
every mask, group identical ones, and call a group contamination when it holds at least
max(3, 1% of the pairs). Images are only checked for shape: the mask identity alone is the evidence.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from marstune.data.mars import CLASS_NAMES, NUM_CLASSES, DataError, MarsData

MIN_GROUP = 3  # fewer identical masks than this is coincidence (e.g. two all-sand close-ups), not a pattern
MIN_GROUP_SHARE = 0.01  # ... and on large sets a group must also hold 1% of the pairs
# The real set's contamination is ~4%: a filter that takes more than half the pairs has met a data set
# whose real masks repeat (tiles of one scene, a uniform class), and training on the rest would mislead.
MAX_REMOVED_SHARE = 0.5


def group_threshold(n: int) -> int:
    """Smallest number of identical masks that counts as contamination among n pairs."""
    return max(MIN_GROUP, math.ceil(MIN_GROUP_SHARE * n))


@dataclass(frozen=True, eq=False)
class CleanReport:
    """What find_contamination removed and why."""

    removed: np.ndarray  # sorted int64 indices of the removed pairs
    kept: int  # pairs left after removal
    shared_mask_count: int  # distinct masks shared by the removed pairs (1 on the real data, 0 when clean)
    reason: str  # one line: the rule that fired, or why nothing did
    class_shares: tuple[float, ...] = ()  # pixel share per class over the shared mask(s), CLASS_NAMES order

    def summary(self) -> str:
        """One human paragraph: counts, share, the shared mask's class histogram and the rule."""
        total = self.kept + len(self.removed)
        if len(self.removed) == 0:
            return f"No contamination found in {total} training pairs: {self.reason}. All pairs kept."
        masks = (
            "one identical label mask"
            if self.shared_mask_count == 1
            else f"{self.shared_mask_count} label masks, each repeated many times"
        )
        hist = ", ".join(
            f"{name} {share:.0%}" for name, share in zip(CLASS_NAMES, self.class_shares, strict=True)
        )
        first = ", ".join(str(int(i)) for i in self.removed[:8]) + (", ..." if len(self.removed) > 8 else "")
        return (
            f"Removed {len(self.removed)} of {total} training pairs ({len(self.removed) / total:.1%}): they "
            f"all carry {masks} (class shares: {hist}), which real terrain masks never do; "
            f"{self.reason}. Removed indices: {first}. {self.kept} pairs kept."
        )


def find_contamination(images: np.ndarray, labels: np.ndarray) -> CleanReport:
    """Find every group of >= group_threshold(N) pairs whose label masks are byte-identical."""
    images, labels = np.asarray(images), np.asarray(labels)
    if labels.ndim != 3 or images.shape != labels.shape:
        raise DataError(
            f"clean: images {images.shape} and labels {labels.shape} do not match; "
            f"expected two (N, 64, 128) arrays of the same pairs"
        )
    n = len(labels)
    threshold = group_threshold(n)
    # Group by the mask bytes themselves: the dict hashes them and compares equal keys byte by byte, so
    # grouping is exact (no digest collision could ever merge two different masks).
    groups: dict[bytes, list[int]] = {}
    for i in range(n):
        groups.setdefault(np.ascontiguousarray(labels[i]).tobytes(), []).append(i)
    big = sorted((m for m in groups.values() if len(m) >= threshold), key=len, reverse=True)
    largest = max((len(m) for m in groups.values()), default=0)
    rule = f"a group needs >= {threshold} identical masks (max({MIN_GROUP}, 1% of {n}))"
    if not big:
        reason = f"no label mask is shared by more than {largest} pair(s) and {rule}"
        return CleanReport(np.zeros(0, dtype=np.int64), n, 0, reason)
    removed = sorted(i for members in big for i in members)
    counts = sum(np.bincount(labels[m[0]].ravel().astype(np.int64), minlength=NUM_CLASSES) for m in big)
    reason = f"shared-mask group size(s) {', '.join(str(len(m)) for m in big)}; {rule}"
    return CleanReport(
        removed=np.array(removed, dtype=np.int64),
        kept=n - len(removed),
        shared_mask_count=len(big),
        reason=reason,
        class_shares=tuple(float(c) for c in counts[:NUM_CLASSES] / counts.sum()),
    )


def check_enough_left(report: CleanReport, source: str) -> None:
    """Refuse a cleaning that removed all or most pairs, naming the filter and how to turn it off."""
    total = report.kept + len(report.removed)
    if report.kept >= 2 and len(report.removed) <= MAX_REMOVED_SHARE * total:
        return
    raise DataError(
        f"{source}: the contamination filter (data.clean: pairs whose label masks are identical) removed "
        f"{len(report.removed)} of {total} pairs, leaving {report.kept}; if these masks are real, keep "
        "every pair with data.clean=false (`tune run --set data.clean=false`; for `tune pix2pix`, "
        "`clean: false` under `spec: data:` in the export; `tune data clean --data ...` shows the groups)"
    )


def remove_contamination(data: MarsData) -> tuple[MarsData, CleanReport]:
    """`data` without the contaminated pairs (the same object when there are none), and the report.

    The fingerprint of the cleaned data is derived from the original one and the removed indices, so it
    stays a function of the file while telling cleaned and raw data apart.
    """
    report = find_contamination(data.images, data.labels)
    if len(report.removed) == 0:
        return data, report
    keep = np.ones(len(data), dtype=bool)
    keep[report.removed] = False
    tag = f"{data.fingerprint}|clean|{report.removed.tolist()}"
    cleaned = MarsData(
        images=data.images[keep],
        labels=data.labels[keep],
        test_images=data.test_images,
        source=data.source,
        fingerprint=hashlib.sha256(tag.encode()).hexdigest()[:16],
    )
    return cleaned, report
