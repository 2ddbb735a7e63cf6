"""What a rater's answer means as rewards: the one mapping the service's human scorer applies, and
`rss bench feedback` applies in-process, so both train on the same numbers.

* pairwise: the preferred mask gets 1, the other 0 (a tie 0.5 each); PSD then credits the reward
  difference exactly where the two masks disagree.
* score: the score in [0, 1] is the mask's reward.
* best of N: the chosen mask gets 1, the others 0 (N - 1 preferences from one answer).
* pixel (brush): painted 1 correct -> +1, 2 wrong -> -1, 0 unmarked (or ignore) -> 0.
* point: at each asked pixel, yes -> +1, no -> -1; unsure and pixels not asked carry nothing.
"""

from __future__ import annotations

import numpy as np

PREFERENCE = {"a": (1.0, 0.0), "b": (0.0, 1.0), "tie": (0.5, 0.5)}
PIXEL_REWARD = np.array([0.0, 1.0, -1.0], np.float32)  # painted 0 unmarked, 1 correct, 2 wrong -> reward
UNMARKED, CORRECT, WRONG = 0, 1, 2
LABEL_NONE = 255  # a class brush answer names no class at this pixel (the ignore label)
VERDICT_REWARD = {"yes": 1.0, "no": -1.0, "unsure": float("nan")}
