"""`rss train` arguments: one dataclass whose field docstrings are the --help text."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from learner.zoo import TV_AUX
from rss_core.schemas import PROCEDURAL, DatasetName, GridMode, Level, Metric, ScorerName

# The best image-level configuration `rss bench convergence` found (docs/benchmarks.md, "Convergence").
# `rss train --reward image` uses it when no other flag is given.
IMAGE_BEST = {
    "samples": 32, "psd": True, "syncan": True, "estimator": "likelihood", "psr": True, "psr_scales": (32,),
}
PIXEL_DEFAULT = {"samples": 1, "estimator": "likelihood"}


@dataclass
class TrainArgs:
    # Data
    dataset: DatasetName = "shapes"
    """dataset layout: built-in procedural `shapes` (4 classes) or `scenes` (8 classes, cluttered and
    occluded, the harder benchmark), or a folder in VOC/Cityscapes/Pascal Context layout"""
    data_root: str | None = None
    """dataset folder (folder datasets only)"""
    num_classes: int | None = None
    """override the layout's class count, for custom data kept in a standard layout"""
    class_names: str | None = None
    """comma-separated class names to go with --num-classes"""
    image_size: int = 256
    """folder datasets: images and labels are resized to this square size; 0: kept at their own size and
    aspect ratio (evaluation too), which needs --crop-size to train on images of different sizes"""
    crop_size: int = 0
    """training views, as torchvision's segmentation references make them: the shorter side rescaled at
    random (--scale-range times this), a horizontal flip, then a crop of this square (padded with ignore);
    0: whole images. Remote runs send each episode's view: the service's ground truth scores it alike"""
    scale_range: tuple[float, float] = (0.5, 2.0)
    """--crop-size: the range of the random rescale, as multiples of the crop"""
    color_jitter: float = 0.0
    """--crop-size: brightness, contrast and saturation jitter (0: none)"""
    shapes_size: int = 64
    """shapes: image side in pixels"""
    scenes_size: int = 128
    """scenes: image side in pixels"""
    data_workers: int = -1
    """DataLoader worker processes reading the batches of the steps ahead (-1: 2 for folder datasets, 0 for
    the procedural ones, which are in memory already; 0: read in the training process)"""
    label_cache_mb: int = 256
    """folder datasets: MiB of labels kept for the in-process ground truth and CE (least recently used out)"""
    train_size: int = 2000
    """procedural datasets (shapes, scenes): number of training images"""
    val_size: int = 200
    """procedural datasets (shapes, scenes): number of validation images"""
    train_split: str = "train"
    """split to train on"""
    val_split: str = "val"
    """split to evaluate on"""

    # Objective and reward
    objective: Literal["rl", "ce"] = "rl"
    """`rl` learns from rewards; `ce` is the pixel-supervised cross-entropy baseline"""
    reward: Level = "image"
    """reward granularity: one number per mask (`image`) or one per pixel (`pixel`)"""
    metric: Metric = "miou"
    """image-level ground-truth reward: per-image mIoU over the label's classes (`miou`),
    over label-or-sample classes (`miou_union`: collapses to background), pixel accuracy, Dice"""
    samples: int = 0
    """masks sampled per image, K (0: the default for --reward: image 32, pixel 1)"""
    psd: bool = IMAGE_BEST["psd"]
    """pair-wise spatial difference advantages (needs K >= 2); off: leave-one-out or batch-mean baseline"""
    syncan: bool = IMAGE_BEST["syncan"]
    """scale advantages by their std over the global batch (all DDP ranks)"""
    estimator: Literal["auto", "likelihood", "reinforce"] = "auto"
    """`likelihood` divides each advantage by pi(a) of the sampled action (capped by
    --max-weight), so a rarely sampled right answer moves the policy as cross-entropy would;
    `reinforce` is the plain policy gradient; `auto`: the measured best for --reward"""
    max_weight: float = 20.0
    """likelihood estimator: cap on 1/pi(a)"""
    psr: bool = IMAGE_BEST["psr"]
    """progressive scale rewards: act on a coarse grid first (image-level rewards only:
    pixel rewards already credit each pixel, so --reward pixel ignores it)"""
    psr_mode: GridMode = "grid"
    """PSR form: `grid` samples a strided pixel lattice scored against the label there;
    `pool` pools logits into cells"""
    psr_scales: tuple[int, ...] = IMAGE_BEST["psr_scales"]
    """PSR scales, coarse to fine; 0 = full resolution (default: a fixed 32 x 32 lattice)"""
    psr_rule: Literal["fractions", "plateau"] = "fractions"
    """when PSR moves to the next scale: at step fractions, or when the reward plateaus"""
    psr_fractions: tuple[float, ...] | None = None
    """step fractions at which each next scale starts (default: evenly over the first half)"""
    psr_patience: int = 300
    """plateau rule: steps without reward improvement before the next scale"""
    entropy_coef: float = 0.0
    """entropy bonus weight (beta)"""

    # Model and optimisation
    arch: str = "unet"
    """`unet` (built in); `tv:<name>`, a torchvision segmentation model (`lraspp_mobilenet_v3_large`,
    `deeplabv3_mobilenet_v3_large`, `deeplabv3_resnet50`, `fcn_resnet50`; extra `tv`); or `smp:<Arch>:<encoder>`
    (segmentation-models-pytorch, extra `smp`). None is pretrained: see --weights"""
    aux_weight: float = 0.0
    """--objective ce with tv:deeplabv3_* or tv:fcn_*: weight of the cross-entropy of torchvision's auxiliary
    head (its recipe uses 0.5); 0: the model is built without that head"""
    width: int = 8
    """UNet base width (channels at full resolution)"""
    depth: int = 3
    """UNet downsampling levels (channels double at each)"""
    steps: int = 3000
    """optimisation steps"""
    batch_size: int = 16
    """images per step"""
    lr: float = 1e-3
    """Adam learning rate"""
    seed: int = 0
    """seed for initialisation, data order and sampling (runs are reproducible)"""

    # Where rewards come from
    reward_source: Literal["local", "remote"] = "local"
    """`local`: ground truth in-process; `remote`: the reward service (token in $RSS_LEARNER_TOKEN)"""
    service_url: str = "http://127.0.0.1:8000"
    """remote: the reward service's base URL"""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """remote: the Redis database the service writes results to"""
    wire: Literal["v1", "v2"] = "v2"
    """remote: the wire contract: `v2` posts a step's masks as one binary body and reads one result entry per
    episode; `v1` posts base64 masks in JSON and reads one entry per sample (`rss_core.wire`)"""
    run_id: str = ""
    """remote: the run's id at the service (default: the --out folder's name, so --resume keeps it)"""
    scorer: ScorerName = "gt"
    """remote: who scores: ground truth, human raters, or an external endpoint (--endpoint)"""
    endpoint: str = ""
    """remote, --scorer http: the external scorer's URL"""
    human_task: Literal["score", "pairwise", "best"] = "score"
    """--scorer human, image level: raters score each mask, pick the better of two (pairs 0-1, 2-3, ...), or
    `best`: pick the best of an image's K masks (2 <= K <= 8; with --replay, K - 1 preferences per answer).
    Pixel level asks `pixel` (brush) questions, or `point` ones with --points"""
    max_inflight: int = 0
    """remote: batches posted and not yet applied; 0 = wait for each step's rewards before the next.
    With N > 0 the learner samples ahead and corrects with a clipped importance ratio"""
    ppo_clip: float = 0.2
    """remote, --max-inflight > 0: the ratio pi_theta / pi_behaviour is clipped to [1 - eps, 1 + eps]"""
    max_staleness: int = 4
    """remote: batches whose rewards come back more than this many policy versions late are dropped"""
    reward_timeout_s: float = 300.0
    """remote: how long a step waits for its rewards before leaving the missing images out"""
    service_retry_s: float = 120.0
    """remote: how long a POST refused for now (429 rate limit, 502/503/504, lost connection) or an
    unreachable Redis is retried, with backoff, before the run stops"""
    reclaim_idle_s: float = 10.0
    """remote, --resume: results the stopped learner read but never acknowledged are taken over
    (XAUTOCLAIM) once idle this long; keep it above a live learner's longest step"""

    # Making each answer count
    replay: int = 0
    """keep the last N answers and, every step, learn again from --replay-batch of them: pixel level, a
    confirmed pixel is a label and a wrong one rules its class out; image level (pairs 0-1, 2-3, ...,
    --no-psr), the preferred mask beats the other where they differ; 0: each answer is used once"""
    replay_batch: int = 16
    """--replay: kept answers per step"""
    replay_weight: float = 1.0
    """--replay: weight of the supervised term from kept answers"""
    replay_margin: int = 0
    """--replay, pixel level: keep a confirmed pixel only where the mask shown has one class and nothing is
    painted wrong within this many pixels, and a wrong one only this far inside what is painted (a brush
    misses strips thinner than its stroke and spills past edges; learner/replay.py); 0: every pixel"""
    replay_balance: bool = False
    """--replay, pixel level: the confirmed and the ruled-out pixels of kept answers each take their own mean
    (instead of one mean over both), so a class covering most pixels cannot drown the answers ruling it out"""
    replay_updates: int = 0
    """--replay: after each answered step, this many more updates on kept answers alone (answers arrive
    slowly; the learner keeps learning from what it has meanwhile)"""
    pairs: Literal["sample", "region"] = "sample"
    """image level, K = 2 (a rater picks the better mask): both masks sampled, or `region`: the policy's most
    likely mask against the same mask with one region where it hesitates switched to its second class,
    learned from as a Bradley-Terry term on that region (learner/replay.py); needs --no-psr. With
    --human-task best, K masks: the most likely one and K - 1 variants, each with another region switched"""
    region_size: int = 15
    """--pairs region: the region lies in a window this many pixels wide"""
    region_margin: float = 0.5
    """--pairs region: the region's pixels are those whose top two classes are within this of each other"""
    points: int = 0
    """pixel level, K = 1: point verification, N questions per image: at N pixels a rater answers "is this
    <the policy's most likely class>?" yes or no (a sparse pixel reward); 0: the whole mask is answered"""
    point_query: Literal["uncertain", "random"] = "uncertain"
    """--points: where the questions go: where the policy hesitates, or anywhere"""
    first_mask: Literal["sample", "mode"] = "sample"
    """pixel level: the first of the K masks raters answer is sampled, or the policy's most likely mask
    (a best guess is what a rater corrects fastest, and sampling noise makes specks a brush misses)"""
    image_pool: int = 1
    """on-policy RL: draw this many times --batch-size images and ask about the --batch-size where the policy
    hesitates most (mean (1 - margin)^4 over the action grid; a forward pass per candidate, no rater time);
    1: the batch is drawn at random"""

    # Running
    device: str = "auto"
    """`auto` (CUDA when present), `cpu`, `cuda`, `cuda:1`, ..."""
    threads: int = 0
    """torch CPU threads (0: torch's default); use 1 when other services share the cores"""
    eval_every: int = 250
    """steps between validation runs"""
    checkpoint_every: int = 500
    """steps between checkpoints"""
    out: str = "runs/latest"
    """output folder: metrics.jsonl, final.json, checkpoint.pt, curves.png"""
    resume: bool = False
    """continue from OUT/checkpoint.pt exactly where it stopped"""
    init_from: str | None = None
    """start from these weights instead of a random init: an RSS checkpoint (e.g. a CE run on a few
    labelled images) or a state dict of the same architecture (optimizer and step start anew;
    ignored with --resume, whose checkpoint has the weights)"""
    weights: str | None = None
    """start from a state dict you downloaded: a classification network's (e.g. torchvision's ImageNet
    resnet50 or mobilenet_v3_large) into the backbone, or a whole segmentation model's (a class-count head
    that does not fit stays at its random init, and is logged); not with --init-from; ignored with --resume"""
    amp: Literal["off", "bf16", "fp16"] = "off"
    """mixed precision for the model's forward (the policy's sampling and log-probs stay float32):
    `bf16` on CUDA or CPU, `fp16` on CUDA only (with a gradient scaler)"""
    channels_last: bool = False
    """keep the model's weights and inputs in channels-last memory layout (faster convolutions on GPUs)"""
    compile: bool = False
    """torch.compile the model for the training forwards (the first steps compile; CPU compiling needs a C++
    compiler)"""
    progress: bool = True
    """show a progress bar"""

    @classmethod
    def of(cls, args: TrainArgs, **overrides) -> TrainArgs:
        """The plain `TrainArgs` of ``args`` (a command's arguments that extend these, e.g. `rss demo`'s or
        a bench's), with ``overrides``."""
        return cls(**{**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}, **overrides})

    def resolved_samples(self) -> int:
        if self.samples:
            return self.samples
        return IMAGE_BEST["samples"] if self.reward == "image" else PIXEL_DEFAULT["samples"]

    def resolved_data_workers(self) -> int:
        if self.data_workers >= 0:
            return self.data_workers
        return 0 if self.dataset in PROCEDURAL else 2

    def resolved_estimator(self) -> str:
        if self.estimator != "auto":
            return self.estimator
        return IMAGE_BEST["estimator"] if self.reward == "image" else PIXEL_DEFAULT["estimator"]

    def validate(self) -> None:
        """Reject impossible combinations up front, naming the flag."""
        if self.samples < 0:
            raise ValueError(f"--samples must be >= 1 (or 0 for the default), got {self.samples}")
        if self.image_size < 0 or self.crop_size < 0 or self.color_jitter < 0:
            raise ValueError("--image-size, --crop-size and --color-jitter must be >= 0")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"--scale-range needs 0 < min <= max, got {self.scale_range}")
        if self.crop_size:
            clash = [flag for flag, on in (("--scorer " + self.scorer, self.reward_source == "remote"
                                            and self.scorer != "gt"),
                                           ("--max-inflight", self.max_inflight > 0), ("--replay", self.replay > 0),
                                           ("--image-pool", self.image_pool > 1)) if on]
            if clash:
                raise ValueError(f"--crop-size does not go with {', '.join(clash)} yet: only the service's ground "
                                 "truth scores views, and kept answers and pools are looked up by image, not by view")
        if self.data_workers < -1:
            raise ValueError(f"--data-workers must be >= 0 (or -1 for the default), got {self.data_workers}")
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every", "width", "depth", "label_cache_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_weight < 1:
            raise ValueError(f"--max-weight must be >= 1, got {self.max_weight}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if self.dataset not in PROCEDURAL and not self.data_root:
            raise ValueError(f"--dataset {self.dataset} needs --data-root")
        if self.class_names and self.num_classes is None:
            raise ValueError("--class-names needs --num-classes")
        if self.class_names and len(self.class_names.split(",")) != self.num_classes:
            raise ValueError(
                f"--class-names lists {len(self.class_names.split(','))} names for --num-classes {self.num_classes}"
            )
        if self.reward_source == "remote" and self.objective != "rl":
            raise ValueError("--reward-source remote needs --objective rl (the CE baseline reads labels)")
        if self.scorer == "http" and not self.endpoint:
            raise ValueError("--scorer http needs --endpoint URL")
        if self.max_inflight < 0 or self.max_staleness < 0 or not 0 < self.ppo_clip < 1:
            raise ValueError("--max-inflight and --max-staleness must be >= 0, --ppo-clip in (0, 1)")
        if self.max_inflight and self.reward_source != "remote":
            raise ValueError("--max-inflight needs --reward-source remote")
        if self.service_retry_s < 0:
            raise ValueError(f"--service-retry-s must be >= 0, got {self.service_retry_s}")
        if self.reclaim_idle_s < 0:
            raise ValueError(f"--reclaim-idle-s must be >= 0, got {self.reclaim_idle_s}")
        if self.reward_timeout_s <= 0:
            raise ValueError(f"--reward-timeout-s must be positive, got {self.reward_timeout_s}")
        if self.replay < 0 or self.replay_batch < 1 or self.replay_weight < 0 or self.replay_margin < 0:
            raise ValueError("--replay, --replay-weight and --replay-margin must be >= 0, --replay-batch >= 1")
        if self.replay and self.objective != "rl":
            raise ValueError("--replay needs --objective rl (it keeps answers about sampled masks)")
        pairwise = self.objective == "rl" and self.reward == "image"
        best = pairwise and self.human_task == "best"
        if best and not 2 <= self.resolved_samples() <= 8:
            raise ValueError(f"--human-task best shows an image's K masks in one question: --samples must be 2 to 8, "
                             f"got {self.resolved_samples()}")
        if self.replay and pairwise and ((self.resolved_samples() % 2 and not best) or self.psr):
            raise ValueError("--replay with --reward image keeps preferences between full-resolution masks: "
                             "it needs --no-psr and an even --samples (pairs 0-1, 2-3, ...) or --human-task best")
        if self.pairs == "region" and not (pairwise and (self.resolved_samples() == 2 or best) and not self.psr):
            raise ValueError("--pairs region needs --reward image, --no-psr and --samples 2 (or --human-task best "
                             "with 2 to 8 samples: the best of k - 1 region variants and the most likely mask)")
        if self.pairs == "region" and self.max_inflight:
            raise ValueError("--pairs region does not work with --max-inflight yet")
        if self.region_size < 1 or not 0 < self.region_margin <= 1:
            raise ValueError(f"--region-size must be >= 1 and --region-margin in (0, 1], got {self.region_size}, "
                             f"{self.region_margin}")
        if self.image_pool < 1:
            raise ValueError(f"--image-pool must be >= 1, got {self.image_pool}")
        if self.image_pool > 1 and (self.objective != "rl" or self.max_inflight):
            raise ValueError("--image-pool needs --objective rl without --max-inflight (it chooses the images "
                             "raters are asked about from the current policy)")
        if self.replay_updates < 0:
            raise ValueError(f"--replay-updates must be >= 0, got {self.replay_updates}")
        if self.replay_updates and not self.replay:
            raise ValueError("--replay-updates needs --replay N (the kept answers they learn from)")
        if self.first_mask == "mode" and (self.objective != "rl" or self.reward != "pixel"):
            raise ValueError("--first-mask mode needs --reward pixel (image-level rewards compare sampled masks)")
        if self.points < 0:
            raise ValueError(f"--points must be >= 0, got {self.points}")
        if self.points and not (self.objective == "rl" and self.reward == "pixel" and self.resolved_samples() == 1):
            raise ValueError("--points needs --reward pixel and --samples 1 (questions about the most likely mask)")
        if self.replay_balance and (not self.replay or self.reward != "pixel"):
            raise ValueError("--replay-balance weighs kept pixel answers: it needs --replay N and --reward pixel")
        if self.replay_margin and (self.points or self.reward != "pixel"):
            raise ValueError("--replay-margin trusts brush answers away from edges: it needs --reward pixel, and "
                             "not --points (a point answer is one pixel, which no margin would keep)")
        if self.first_mask == "mode" and self.max_inflight:
            raise ValueError("--first-mask mode does not work with --max-inflight yet")
        if self.replay and self.max_inflight:
            raise ValueError("--replay does not work with --max-inflight yet")
        if self.weights and self.init_from:
            raise ValueError("--weights and --init-from both set a run's starting weights: give one")
        if self.aux_weight < 0:
            raise ValueError(f"--aux-weight must be >= 0, got {self.aux_weight}")
        if self.aux_weight and self.objective != "ce":
            raise ValueError("--aux-weight needs --objective ce (the auxiliary head is trained on labels)")
        if self.aux_weight and self.arch.removeprefix("tv:") not in TV_AUX:
            raise ValueError(f"--aux-weight: --arch {self.arch} has no auxiliary head (these do: "
                             f"{', '.join('tv:' + n for n in TV_AUX)})")
        if self.arch.startswith("tv:deeplabv3") and min(self.batch_size, self.replay_batch if self.replay else 2) < 2:
            raise ValueError(f"--arch {self.arch} needs --batch-size (and --replay-batch) >= 2: its BatchNorm after "
                             f"image pooling cannot normalise one image in training")
        if self.psr and not self.psr_scales:
            raise ValueError("--psr-scales needs at least one scale")
        if any(s < 0 for s in self.psr_scales):
            raise ValueError(f"--psr-scales must be >= 0, got {self.psr_scales}")
