"""`--replay N`: keep the last N answers and learn from them again every step.

A human answer is the scarcest input of the system; on-policy RL uses it in one update and throws
it away. Two kinds of answer can be kept, because each says something that stays true whichever
policy sampled the masks, so neither needs behaviour log-probabilities however old it is:

* **pixel-level answers** (a rater's brush, an endpoint's map, the ground truth): where an answer says
  the sampled class is right, that class *is* the label; where it says wrong, that class is ruled out.
  `AnswerReplay` adds, over a batch of kept answers, the supervised term

      L = mean over answered pixels of  -log pi(a)         where r > 0   (a confirmed label)
                                        -log (1 - pi(a))   where r < 0   (a ruled-out class)

  (the second is the "unlikelihood" of Welleck et al., ICLR 2020). Pixels with r = 0 say nothing.
  A person's brush misses wrong strips thinner than its stroke, which lie along the edges of the mask
  shown, and spills past what it paints: with ``margin`` m > 0 (`--replay-margin`), a confirmed pixel
  is kept only where the mask shown has one class and nothing is painted wrong within m pixels, and a
  painted pixel only m pixels inside its stroke (`trusted`). Otherwise every missed strip is kept as a
  label, and the policy learns its own mistakes along every edge. With ``balance``
  (`--replay-balance`) the confirmed and the ruled-out pixels each take their own mean, so on data
  where one class covers most pixels its confirmations do not drown the answers that rule it out.

* **preferences between two masks** (`--reward image`, masks paired 0-1, 2-3, ...: a rater's pairwise
  answer, or two scores compared): the preferred mask w is better than the other l where they differ,
  the set D that PSD credits. `PairReplay` keeps each pair's winner and loser masks and adds a
  Bradley-Terry term per pixel of D,

      L = mean over pixels of D of  -log sigmoid(z_w - z_l) = -log (pi(w) / (pi(w) + pi(l)))

  which moves the two classes the answer compared and no other, and stops pushing once the policy
  agrees (a rater's occasional wrong answer costs a bounded amount). Ties say nothing and are not kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rss_core.grid import ActionGrid


class Ring:
    """The last ``capacity`` answered images: an image index (on the CPU, where images are read) and,
    per answer, two (h, w) uint8 / int8 maps whose meaning the subclass gives."""

    fields: tuple[str, str] = ("a", "b")
    dtypes: tuple[torch.dtype, torch.dtype] = (torch.uint8, torch.uint8)

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.capacity, self.device = capacity, device
        self.indices: torch.Tensor | None = None  # (N,) on the CPU
        self.maps: list[torch.Tensor] = []  # two (N, h, w) tensors on ``device``
        self.next = 0  # where the next answer goes once the ring is full
        self.size = 0

    def _put(self, indices: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> None:
        if self.indices is None:
            self.indices = torch.zeros(self.capacity, dtype=torch.long)
            self.maps = [torch.zeros((self.capacity, *first.shape[1:]), dtype=d, device=self.device)
                         for d in self.dtypes]
        n = min(indices.shape[0], self.capacity)  # more than fit: the newest
        slots = (self.next + torch.arange(n)) % self.capacity
        self.indices[slots] = indices.cpu()[-n:]
        on = slots.to(self.device)
        for kept, new in zip(self.maps, (first, second), strict=True):
            kept[on] = new[-n:].to(self.device, kept.dtype)
        self.next, self.size = (self.next + n) % self.capacity, min(self.size + n, self.capacity)

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Slots of ``batch`` kept answers, drawn uniformly (with replacement) by ``generator`` (on the CPU)."""
        return torch.randint(self.size, (batch,), generator=generator)

    def state_dict(self) -> dict:
        if self.indices is None:
            return {}
        return {"indices": self.indices.cpu(), **{f: m.cpu() for f, m in zip(self.fields, self.maps, strict=True)},
                "next": self.next, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.indices, self.next, self.size = state["indices"], state["next"], state["size"]
        self.maps = [state[f].to(self.device) for f in self.fields]

    def loss(self, logits: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError


def _dilate(x: torch.Tensor, margin: int) -> torch.Tensor:
    return F.max_pool2d(x, 2 * margin + 1, stride=1, padding=margin)


def trusted(actions: torch.Tensor, signs: torch.Tensor, margin: int) -> torch.Tensor:
    """The signs (n, h, w) of pixel answers about masks ``actions`` (n, h, w) that a brush answer can be
    trusted on: +1 where the pixel and every pixel within ``margin`` of it carry one class in the mask and
    none is painted wrong, -1 where every pixel within ``margin`` is painted wrong, 0 elsewhere."""
    if margin == 0:
        return signs
    a = actions.unsqueeze(1).float()
    one_class = _dilate(a, margin) == -_dilate(-a, margin)  # max == min over the window (the border pads)
    wrong = (signs < 0).unsqueeze(1).float()
    near_wrong = _dilate(wrong, margin) > 0
    inside_wrong = -_dilate(-wrong, margin) > 0  # an erosion: the whole window is painted
    confirmed = (signs > 0).unsqueeze(1) & one_class & ~near_wrong
    return (confirmed.to(signs.dtype) - inside_wrong.to(signs.dtype)).squeeze(1)


def relabel(actions: torch.Tensor, signs: torch.Tensor, named: torch.Tensor, margin: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a trusted answer rules the mask's class out (``signs`` -1) and a class brush named one class
    (``named`` < 255) at every pixel within ``margin``, that class is the label: the pixel's action becomes
    it and its sign +1."""
    n = named.unsqueeze(1).float()
    one_class = _dilate(n, margin) == -_dilate(-n, margin) if margin else torch.ones_like(n, dtype=torch.bool)
    label = (signs < 0) & (named < 255) & one_class.squeeze(1)
    return torch.where(label, named.to(actions.dtype), actions), torch.where(label, torch.ones_like(signs), signs)


class AnswerReplay(Ring):
    """Pixel-level answers: per kept sample, its classes and the sign of each pixel's reward (``margin``:
    only where a brush answer can be trusted, `trusted`)."""

    fields = ("actions", "rewards")
    dtypes = (torch.uint8, torch.int8)

    def __init__(self, capacity: int, device: torch.device, margin: int = 0, balance: bool = False) -> None:
        super().__init__(capacity, device)
        self.margin, self.balance = margin, balance

    @property
    def actions(self) -> torch.Tensor:
        return self.maps[0]

    @property
    def rewards(self) -> torch.Tensor:
        return self.maps[1]

    def add(self, indices: torch.Tensor, actions: torch.Tensor, pixel_rewards: torch.Tensor, valid: torch.Tensor,
            grid: ActionGrid, keep: torch.Tensor | None = None, named: torch.Tensor | None = None) -> None:
        """Keep each sample of a step's pixel-level answers: ``actions`` and ``pixel_rewards`` (B, K, h, w),
        ``valid`` (B, h, w); ``keep`` (B,): the images whose answers all arrived (None: all); ``named``
        (B, K, h, w) uint8: a class brush's class at each painted pixel (255: none), kept as a label where
        the answer is trusted (`trusted`, and one class named all around)."""
        if grid.scale != 0:
            raise ValueError("--replay keeps full-resolution pixel answers (--reward pixel, no PSR grid)")
        rows = torch.arange(len(indices)) if keep is None else keep.cpu().nonzero().flatten()
        on = rows.to(actions.device)
        signs = torch.sign(pixel_rewards[on]) * valid.to(pixel_rewards.device)[on].unsqueeze(1)
        kept = actions[on].flatten(0, 1).to(signs.device)
        signs = trusted(kept, signs.flatten(0, 1), self.margin)
        if named is not None:
            kept, signs = relabel(kept, signs, named[on].flatten(0, 1).to(signs.device), self.margin)
        self._put(indices.cpu()[rows].repeat_interleave(actions.shape[1]), kept, signs)

    def loss(self, logits: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The supervised term over the answered pixels of ``slots``, given the policy's ``logits`` (n, C, H, W)
        for their images."""
        slots = slots.to(self.device)
        actions, rewards = self.actions[slots].long(), self.rewards[slots]
        logp = F.log_softmax(logits, dim=1).gather(1, actions.unsqueeze(1)).squeeze(1)  # (n, H, W)
        confirmed, ruled_out = rewards > 0, rewards < 0
        # log(1 - pi(a)) from log pi(a), clamped away from log(0) where the policy is sure of a wrong class
        log_not = torch.log1p(-logp.exp().clamp(max=1 - 1e-6))
        count = int(confirmed.sum() + ruled_out.sum())
        stats = {"replay_pixels": count / max(len(slots), 1)}
        if self.balance:  # each kind of answer its own mean: a dominant confirmed class cannot drown the "no"s
            return (-(logp * confirmed).sum() / confirmed.sum().clamp(min=1)
                    - (log_not * ruled_out).sum() / ruled_out.sum().clamp(min=1)), stats
        total = -(logp * confirmed).sum() - (log_not * ruled_out).sum()
        return total / max(count, 1), stats


def pair_loss(logits: torch.Tensor, winners: torch.Tensor, losers: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Bradley-Terry per pixel where ``winners`` and ``losers`` (n, H, W) differ: the mean of
    -log(pi(w) / (pi(w) + pi(l))) over those pixels, and their number."""
    logp = F.log_softmax(logits, dim=1)
    lw = logp.gather(1, winners.long().unsqueeze(1)).squeeze(1)
    ll = logp.gather(1, losers.long().unsqueeze(1)).squeeze(1)
    differ = winners != losers
    total = -((lw - torch.logaddexp(lw, ll)) * differ).sum()
    count = int(differ.sum())
    return total / max(count, 1), count


def preferred(actions: torch.Tensor, image_rewards: torch.Tensor, keep: torch.Tensor | None = None,
              best: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The answered pairs of a step: masks paired 0-1, 2-3, ... of ``actions`` (B, K, h, w) with rewards
    (B, K); ``best``: the K masks were one best-of-K question, so the chosen (highest-rewarded) mask beats
    each mask rewarded less, K - 1 pairs from one answer. Returns the image row of each non-tied pair,
    its winner and its loser masks (n, h, w)."""
    b, k = image_rewards.shape
    if best:
        top = image_rewards.argmax(1)  # (B,): the first of the best, if raters split
        decided = image_rewards < image_rewards.gather(1, top.unsqueeze(1))
        if keep is not None:
            decided &= keep.to(decided.device).bool().unsqueeze(1)
        rows = torch.arange(b, device=decided.device).unsqueeze(1).expand_as(decided)[decided]
        win = actions[torch.arange(b, device=actions.device), top.to(actions.device)]  # (B, h, w)
        return rows, win[rows.to(actions.device)], actions[decided.to(actions.device)]
    if k % 2:
        raise ValueError(f"pairs need an even number of samples, got {k}")
    first, second = image_rewards[:, 0::2], image_rewards[:, 1::2]  # (B, K/2)
    decided = first != second
    if keep is not None:
        decided &= keep.to(decided.device).bool().unsqueeze(1)
    a_wins = (first > second).unsqueeze(-1).unsqueeze(-1)
    win = torch.where(a_wins, actions[:, 0::2], actions[:, 1::2])[decided]
    lose = torch.where(a_wins, actions[:, 1::2], actions[:, 0::2])[decided]
    rows = torch.arange(b, device=decided.device).unsqueeze(1).expand_as(decided)[decided]
    return rows, win, lose


class PairReplay(Ring):
    """Preferences: per kept pair, the preferred and the other mask."""

    fields = ("winners", "losers")

    def add(self, indices: torch.Tensor, actions: torch.Tensor, image_rewards: torch.Tensor, grid: ActionGrid,
            keep: torch.Tensor | None = None, best: bool = False) -> None:
        """Keep each decided pair of a step's masks ``actions`` (B, K, h, w) with rewards ``image_rewards`` (B, K)
        (``best``: best-of-K answers, see `preferred`)."""
        if grid.scale != 0:
            raise ValueError("--replay keeps full-resolution preferences (--no-psr)")
        rows, win, lose = preferred(actions, image_rewards, keep, best)
        if len(rows):
            self._put(indices.cpu()[rows.cpu()], win, lose)

    def loss(self, logits: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, dict]:
        slots = slots.to(self.device)
        total, count = pair_loss(logits, self.maps[0][slots], self.maps[1][slots])
        return total, {"replay_pixels": count / max(len(slots), 1)}


def hesitation(margin: torch.Tensor) -> torch.Tensor:
    """Sampling weights (B, h * w) of the pixels where a question is worth most: (1 - margin)^4, with
    margin = pi(1st) - pi(2nd) (B, h, w); a sure pixel keeps a tiny weight, so any image has B draws."""
    return (1 - margin).clamp_min(1e-6).pow(4).flatten(1)


def region_pairs(logp: torch.Tensor, size: int, generator: torch.Generator | None = None,
                 max_margin: float = 0.5, k: int = 2) -> torch.Tensor:
    """Masks a rater compares at a glance, about where the policy hesitates: (B, k, h, w) of the policy's
    most likely mask and k - 1 copies of it, each with one region switched to its second most likely class
    (k = 2: a pair; k > 2: a best-of-k question, where the chosen mask beats each other where they differ).

    Each region grows from a pixel drawn in proportion to (1 - margin)^4, margin = pi(1st) - pi(2nd): the
    pixels of a ``size`` x ``size`` window around it with the same first and second class and a margin under
    ``max_margin`` (and the pixel itself). A region's pixels are not drawn again, so the k - 1 variants ask
    about k - 1 different regions (while the image has that many)."""
    b, _, h, w = logp.shape
    top, cls = logp.detach().exp().topk(2, dim=1)  # (B, 2, h, w)
    margin = top[:, 0] - top[:, 1]
    weights = hesitation(margin)
    ys, xs = torch.arange(h, device=logp.device), torch.arange(w, device=logp.device)
    rows = torch.arange(b, device=logp.device)
    mode = cls[:, 0]
    masks = [mode]
    for _ in range(k - 1):
        centre = torch.multinomial(weights, 1, generator=generator).squeeze(1)  # (B,)
        cy, cx = centre // w, centre % w
        window = (((ys[None, :] - cy[:, None]).abs() <= size // 2)[:, :, None]
                  & ((xs[None, :] - cx[:, None]).abs() <= size // 2)[:, None, :])  # (B, h, w)
        first_c, second_c = cls[:, 0][rows, cy, cx], cls[:, 1][rows, cy, cx]
        region = (window & (cls[:, 0] == first_c[:, None, None]) & (cls[:, 1] == second_c[:, None, None])
                  & (margin < max_margin))
        region[rows, cy, cx] = True
        masks.append(torch.where(region, cls[:, 1], mode))
        weights = torch.where(region.flatten(1), 1e-30, weights)  # asked: the next variant asks elsewhere
    return torch.stack(masks, dim=1)


def point_queries(logp: torch.Tensor, points: int, how: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """The ``points`` pixels of each image a rater is asked "is this <the policy's most likely class>?" about:
    (B, h, w) bool. ``uncertain``: drawn without replacement in proportion to (1 - margin)^4 (margin as in
    `region_pairs`), so they spread over where the policy hesitates instead of crowding one spot;
    ``random``: uniformly."""
    b, _, h, w = logp.shape
    if how == "uncertain":
        top = logp.detach().exp().topk(2, dim=1).values
        weights = hesitation(top[:, 0] - top[:, 1])
    else:
        weights = torch.ones(b, h * w, device=logp.device)
    chosen = torch.multinomial(weights, min(points, h * w), replacement=False, generator=generator)
    query = torch.zeros(b, h * w, dtype=torch.bool, device=logp.device)
    return query.scatter_(1, chosen, True).view(b, h, w)
