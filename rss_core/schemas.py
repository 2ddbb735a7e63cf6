"""The wire contract: every request and response body of the service, and the result entries.

Shared by the service, the learner's remote client and external scorers. Masks travel as
class indices (uint8) in one of three lossless encodings: ``png`` (what people and most tools
write), ``rle`` (row-major runs, compact for smooth masks) and ``raw`` (base64 of the bytes:
the cheapest to encode and decode, what the learner sends; a noisy 512x512 mask costs ~23 ms
as PNG).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from rss_core.keys import SCHEMA_VERSION

Level = Literal["pixel", "image"]
ScorerName = Literal["gt", "human", "http"]
GridMode = Literal["grid", "pool"]  # the PSR forms (rss_core.grid)
# Ground-truth metrics of a whole mask (rss_core.scoring): the one list the learner, service and scorers use
Metric = Literal["miou", "miou_union", "pixel_acc", "dice"]
TaskKind = Literal["score", "pairwise", "best", "pixel", "point"]
# The datasets the learner and the service know (rss_core.data); the procedural ones are drawn in code from
# (seed, split, index): no files, no --data-root
DatasetName = Literal["shapes", "scenes", "voc", "cityscapes", "context"]
PROCEDURAL = ("shapes", "scenes")
PIXEL_KINDS = ("pixel", "point")  # the task kinds of pixel-level runs
BEST_OF = (2, 8)  # a best-of-N task shows an episode's N samples: this many at least and at most
MAX_POINTS = 256  # point questions per episode
MAX_RATER_SECONDS = 86400.0  # the most seconds one answer may say its task was on screen (a day)
Verdict = Literal["yes", "no", "unsure"]
Cell = Annotated[int, Field(ge=0, le=4095)]  # a row or column of a mask
EpisodeStatus = Literal["queued", "scoring", "waiting_for_rater", "scored", "failed"]

RunId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Letters, digits, `_.-`.")]
# Numbers in request bodies: integers fit an int64 (JSON allows 10**400; numpy, Redis and the learner do not)
# and floats are finite (Python's json reads NaN, Infinity and 1e999; none of them is a score).
INT64_MAX = 2**63 - 1
Int64 = Annotated[int, Field(ge=-(2**63), le=INT64_MAX)]
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
Offset = tuple[Count, Count]
Shape = tuple[Int64, Int64]
ImageId = Annotated[str, Field(min_length=1, max_length=256, description="Dataset-relative image id.")]


class PngMask(BaseModel):
    """A mask as a base64 PNG whose pixel values are class indices (mode L or P)."""

    format: Literal["png"] = "png"
    data: str = Field(description="Base64 of the PNG file.")


class RawMask(BaseModel):
    """A mask as base64 of its row-major uint8 bytes."""

    format: Literal["raw"] = "raw"
    shape: Shape = Field(description="(height, width)")
    data: str = Field(description="Base64 of height*width uint8 class indices, row-major.")


class RleMask(BaseModel):
    """A mask as row-major runs: ``values[i]`` repeated ``counts[i]`` times."""

    format: Literal["rle"] = "rle"
    shape: Shape = Field(description="(height, width)")
    values: list[Int64]
    counts: list[Int64]


Mask = Annotated[PngMask | RawMask | RleMask, Field(discriminator="format")]


class ArrayB64(BaseModel):
    """A dense array: base64 of its row-major bytes (little-endian)."""

    dtype: Literal["float32", "uint8"]
    shape: list[int]
    data: str


class Grid(BaseModel):
    """Where a sample's actions live (the learner's PSR action grid).

    ``scale`` 0: a full-resolution mask. ``grid``: an ``s x s`` lattice of pixels, one every
    ``H // s`` starting at ``offset``, scored against the label at those pixels. ``pool``: an
    ``s x s`` mask of cells, upsampled (nearest) to the image size for scoring.
    """

    scale: int = Field(0, ge=0, le=4096)
    mode: GridMode = "grid"
    offset: Offset = Field((0, 0), description="(y, x) of the lattice's first pixel (grid mode).")


# --- runs ---------------------------------------------------------------------------------

class RunCreate(BaseModel):
    """A run's scoring configuration, registered once before its episodes."""

    run_id: RunId
    dataset: str = Field(description="Must be the dataset this service serves (see /v1/ready).")
    level: Level
    scorer: ScorerName = "gt"
    metric: Metric = "miou"
    ratings_per_task: int = Field(1, ge=1, le=16, description="Human scorer: ratings averaged per task.")
    task_kind: TaskKind | None = Field(
        None, description="Human scorer: `score`, `pairwise` or `best` (best of N: one task per episode, all its "
        "samples) at image level; `pixel` (brush) or `point` (yes/no at the episode's `points`) at pixel level. "
        "Default: score for image level, pixel for pixel level.")
    endpoint: str | None = Field(None, description="HTTP scorer: the external endpoint's URL.")
    image_size: int | None = Field(
        None, ge=8, le=4096, description="The learner's training resolution: labels are resized (nearest) to it.")
    dataset_fingerprint: str | None = Field(
        None, pattern=r"^[0-9a-f]{16}$", description="The learner's `SegDataset.fingerprint()` of its training "
        "split: a run whose data is not the service's (another seed, split, size or label set) is refused (409).")
    min_rater_agreement: float | None = Field(
        None, ge=0, le=1, allow_inf_nan=False, description="Human scorer: ratings from raters whose honeypot "
        "agreement is below this are ignored when a task is finalized (a rater who has answered no honeypot yet "
        "passes).")

    @model_validator(mode="after")
    def _check(self) -> RunCreate:
        if self.scorer == "http" and not self.endpoint:
            raise ValueError("scorer 'http' needs an endpoint URL")
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError("endpoint must be an http:// or https:// URL")
        if self.task_kind is None:
            self.task_kind = "pixel" if self.level == "pixel" else "score"
        if (self.task_kind in PIXEL_KINDS) != (self.level == "pixel"):
            raise ValueError(f"task_kind {self.task_kind!r} does not fit level {self.level!r}")
        return self


class RunPublic(RunCreate):
    num_classes: int
    class_names: list[str]
    results_stream: str
    created_at: float


# --- episodes -----------------------------------------------------------------------------

VIEW_SIDE = 8192  # the most rows or columns a view may resize its image to


class View(BaseModel):
    """The training view an episode was sampled on (`rss_core.views`): the image and label resized to ``resize``
    (h, w; the label nearest), mirrored left-right if ``flip``, then the window ``crop`` (top, left, h, w)
    taken, ignore (255) where it passes the resized image's bottom or right edge. The masks are the
    window's, and ground truth scores them against the same view of the label."""

    resize: tuple[Annotated[int, Field(ge=1, le=VIEW_SIDE)], Annotated[int, Field(ge=1, le=VIEW_SIDE)]]
    flip: bool = False
    crop: tuple[Annotated[int, Field(ge=0, le=VIEW_SIDE)], Annotated[int, Field(ge=0, le=VIEW_SIDE)],
                Annotated[int, Field(ge=1, le=VIEW_SIDE)], Annotated[int, Field(ge=1, le=VIEW_SIDE)]]

    @model_validator(mode="after")
    def _check_window(self) -> View:
        if self.crop[0] >= self.resize[0] or self.crop[1] >= self.resize[1]:
            raise ValueError(f"crop {list(self.crop)} must start inside the resized {self.resize[0]}x"
                             f"{self.resize[1]} image")
        return self


class EpisodeMeta(BaseModel):
    """What an episode says besides its masks: the run, the image, the action grid, the policy version."""

    run_id: RunId
    image_id: ImageId
    level: Level
    scale: int = Field(0, ge=0, le=4096, description="PSR scale: 0 = full resolution, else an s x s grid.")
    grid_mode: GridMode = "grid"
    offset: Offset = Field((0, 0), description="(y, x) lattice offset (grid mode).")
    policy_version: int = Field(ge=0, le=INT64_MAX)
    points: list[tuple[Cell, Cell]] | None = Field(
        None, max_length=MAX_POINTS, description="Pixel level, point tasks: the (y, x) cells of the mask a rater is "
        "asked about (\"is this <class>?\"), distinct; required by runs whose task_kind is `point`.")
    view: View | None = Field(
        None, description="The training view the masks were sampled on (a random crop, say); ground truth scores "
        "them against the same view of the label. None: the whole image.")

    @model_validator(mode="after")
    def _check_points(self) -> EpisodeMeta:
        if self.points is not None:
            if self.level != "pixel":
                raise ValueError("points are questions about pixels: only pixel-level episodes carry them")
            if not self.points:
                raise ValueError("points, when given, must name at least one (y, x) cell")
            if len(set(self.points)) != len(self.points):
                raise ValueError("points must be distinct")
        return self

    @property
    def grid(self) -> Grid:
        return Grid(scale=self.scale, mode=self.grid_mode, offset=self.offset)


class EpisodeCreate(EpisodeMeta):
    """K masks sampled by the policy for one image, to be scored (v1: masks in JSON)."""

    samples: list[Mask] = Field(min_length=1, description="The K sampled masks, in sample order.")

    @property
    def count(self) -> int:
        return len(self.samples)


MAX_SIDE = 65535  # the most rows or columns a v2 mask may declare


class EpisodeHeader(EpisodeMeta):
    """v2: one episode of a binary batch (`rss_core.wire`): its K masks follow the header as K*h*w bytes."""

    samples: int = Field(ge=1, le=4096, description="K, the masks of this episode in the body.")
    mask_shape: tuple[Annotated[int, Field(ge=1, le=MAX_SIDE)], Annotated[int, Field(ge=1, le=MAX_SIDE)]] = Field(
        description="(h, w) of each mask: the image's size at scale 0, the grid's at scale s.")

    @property
    def count(self) -> int:
        return self.samples


class EpisodeBatchHeader(BaseModel):
    """v2: the JSON header of a binary batch (`POST /v2/episodes/batch`); the masks follow it, in order."""

    episodes: list[EpisodeHeader] = Field(min_length=1)


class EpisodeBatchCreate(BaseModel):
    """Several episodes in one request (a learner's whole step): all accepted, or none."""

    episodes: list[EpisodeCreate] = Field(min_length=1)


class EpisodeAccepted(BaseModel):
    episode_id: str
    status: EpisodeStatus
    results_stream: str


class EpisodeBatchAccepted(BaseModel):
    episodes: list[EpisodeAccepted]


class EpisodePublic(BaseModel):
    episode_id: str
    run_id: str
    image_id: str
    level: Level
    grid: Grid
    policy_version: int
    samples: int
    status: EpisodeStatus
    reason: str | None = None
    attempts: int = 0
    created_at: float


# --- results ------------------------------------------------------------------------------

class Result(BaseModel):
    """One entry of a run's results stream: one scored sample, or its failure (``error``)."""

    schema_version: int = SCHEMA_VERSION
    episode_id: str
    run_id: str
    sample_index: int
    level: Level
    reward: float | None = Field(None, description="Image level: the sample's reward.")
    reward_map: ArrayB64 | None = Field(
        None, description="Pixel level: float32 (h, w) rewards, NaN where a pixel has none (ignore label).")
    reward_std: float | None = Field(None, description="Spread (std) over the ratings, when several.")
    ratings: int = Field(1, description="How many ratings (or scorer calls) the reward combines.")
    source: ScorerName
    rater_ids: list[str] = []
    policy_version: int
    scored_at: float
    error: str | None = Field(None, description="Why the sample could not be scored (reward fields are empty).")
    scorer_version: str | None = Field(None, description="What the `http` scorer's endpoint said it is "
                                                         "(`scorer_version` of its answer).")
    rater_seconds: float | None = Field(
        None, description="Human scorer: the people-seconds this sample cost: the seconds its task was on screen "
        "(first draw to answer, tab hidden not counted), summed over the ratings combined here and split evenly "
        "over the task's samples (a pairwise task's two results carry half each), so summing a run's results "
        "gives the raters' time. None when a rating did not say (`rater_seconds` is optional in a rating).")


class MapsLayout(BaseModel):
    """Where a v2 result entry's reward maps are: its field `maps`, (K, h, w) little-endian of this dtype."""

    dtype: Literal["float16", "float32"] = Field(
        description="float16 when every value survives it exactly (ground truth: 0, 1, NaN), else float32.")
    shape: tuple[int, int, int]


class EpisodeResult(BaseModel):
    """v2: one entry of a run's results stream per episode (field `episode`, this JSON): its K rewards, or its
    K reward maps (layout here, bytes in the entry's field `maps`), or why it could not be scored (``error``).
    Human scorers write v1 entries (one `Result` per sample, field `payload`) whatever the episode's wire:
    their tasks finish one at a time."""

    schema_version: int = SCHEMA_VERSION
    episode_id: str
    run_id: str
    level: Level
    samples: int = Field(description="K: every sample of the episode is in this entry.")
    rewards: list[float] | None = Field(None, description="Image level: the K samples' rewards, in sample order.")
    maps: MapsLayout | None = Field(None, description="Pixel level: the reward maps' layout (NaN = no reward).")
    source: ScorerName
    scorer_version: str | None = Field(None, description="What the `http` scorer's endpoint said it is "
                                                         "(`scorer_version` of its answer).")
    policy_version: int
    scored_at: float
    error: str | None = Field(None, description="Why the episode could not be scored (reward fields are empty).")


# --- human rating tasks ---------------------------------------------------------------------

class TaskSample(BaseModel):
    sample_index: int
    mask: PngMask


class TaskPoint(BaseModel):
    """A point question: is the mask's class ``class_id`` right at cell (``y``, ``x``) of the mask?"""

    y: int
    x: int
    class_id: int


class TaskPublic(BaseModel):
    """A leased rating task: answer it with ``lease_id`` before ``lease_expires_at``."""

    task_id: str
    lease_id: str
    lease_expires_at: float
    kind: TaskKind
    run_id: str
    episode_id: str
    image_id: str
    image_url: str
    grid: Grid
    samples: list[TaskSample]
    num_classes: int
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    ratings_needed: int
    ratings_done: int
    points: list[TaskPoint] | None = Field(
        None, description="`point` tasks: the questions, in the order `verdicts` answers them (mask coordinates).")


ANSWER_FIELDS = {"score": "score", "pairwise": "preference", "best": "best", "pixel": "pixels", "point": "verdicts"}


class RatingCreate(BaseModel):
    """A rater's answer; give the field that fits the task's kind."""

    lease_id: str
    score: float | None = Field(None, ge=0, le=1, allow_inf_nan=False, description="`score` tasks: quality in [0, 1].")
    preference: Literal["a", "b", "tie"] | None = Field(None, description="`pairwise` tasks: the better sample.")
    best: int | None = Field(
        None, ge=0, lt=BEST_OF[1], description="`best` tasks: the chosen sample's position in the task's `samples`.")
    pixels: PngMask | None = Field(
        None, description="`pixel` tasks: PNG of the mask's size, 0 unmarked, 1 correct, 2 wrong.")
    verdicts: list[Verdict] | None = Field(
        None, max_length=MAX_POINTS, description="`point` tasks: one answer per point, in the order of the task's "
        "`points`: yes (the class is right there), no, or unsure.")
    rater_seconds: float | None = Field(
        None, gt=0, le=MAX_RATER_SECONDS, allow_inf_nan=False, strict=True, description="Seconds the task was on "
        "screen before "
        "this answer (from its first draw, not counting time with the tab hidden), as the rater's client measured "
        "it: it reaches the results (`Result.rater_seconds`) and the medians of GET /v1/stats.")

    @model_validator(mode="after")
    def _one_answer(self) -> RatingCreate:
        given = [n for n in ANSWER_FIELDS.values() if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(ANSWER_FIELDS.values())} (got {given or 'none'})")
        return self


class LeaseRef(BaseModel):
    lease_id: str


class LeaseRelease(BaseModel):
    """Give a lease back unanswered (sign-out, a closed tab, a prefetched task not shown): its slot waits again
    at once, for any rater, this one included, and it counts as no skip. ``token`` is the rater's token, for a
    client that cannot send an Authorization header (`navigator.sendBeacon` when a page closes)."""

    lease_id: str = Field(min_length=1, max_length=64)
    token: str | None = Field(None, max_length=1024, description="The rater's token, when no Authorization header "
                              "is sent; it must be the token of the rater who holds the lease.")


class QueueDepth(BaseModel):
    """Rating slots waiting for a rater, and slots leased but not answered yet; for a rater token, also how many
    of the waiting tasks that rater may lease now, and how many they skipped that come back to them later."""

    waiting: int
    leased: int
    available: int | None = Field(
        None, description="Rater tokens: tasks this rater may lease now (not rated or skipped by them, not held "
        "by them), what GET /v1/tasks/next would hand them; counted over the first 1000 waiting entries.")
    skipped_later: int | None = Field(
        None, description="Rater tokens: tasks this rater skipped that wait unanswered: each is offered to them "
        "again RSS_SKIP_RETRY_S after their skip if no other rater took it (given up after RSS_MAX_SKIPS skips).")


class RaterPublic(BaseModel):
    """The signed-in rater: name and lifetime counters."""

    name: str
    rated: int
    skipped: int


class RatingAccepted(BaseModel):
    task_id: str
    ratings_done: int
    ratings_needed: int
    complete: bool
    amend_until: float | None = Field(
        None, description="Until when (epoch seconds) this answer may be replaced, once, with PUT "
        "/v1/tasks/{id}/rating and the same lease (RSS_AMEND_S after it arrived); null when amending is off.")


# --- external scorer (http) -----------------------------------------------------------------

class ExternalScoreRequest(BaseModel):
    """What the `http` scorer POSTs to an external endpoint for one episode."""

    schema_version: int = SCHEMA_VERSION
    episode_id: str
    run_id: str
    image_id: str
    dataset: str
    level: Level
    metric: str
    grid: Grid
    image_size: int | None = None
    samples: list[RawMask]


class ExternalScoreResponse(BaseModel):
    """The endpoint's answer: one reward per sample (image level) or one map per sample (pixel level)."""

    rewards: list[float] | None = Field(None, description="Image level: a finite reward per sample.")
    reward_maps: list[ArrayB64] | None = Field(
        None, description="Pixel level: float32 (h, w) per sample, the sample's shape; NaN = no reward.")
    scorer_version: str | None = Field(None, max_length=200, description="Which scorer (model, prompt, "
                                       "version) answered: carried into v2 result entries.")


# --- operations -----------------------------------------------------------------------------

class Health(BaseModel):
    status: Literal["ok"] = "ok"


CircuitState = Literal["closed", "open", "half_open"]


class Ready(BaseModel):
    ready: bool
    redis: bool
    scorer: bool
    dataset: str
    dataset_fingerprint: str = Field(description="What the learner's `dataset_fingerprint` must be (POST /v1/runs).")
    detail: str | None = None
    circuits: dict[CircuitState, int] = Field(
        default_factory=dict, description="How many external (`http` scorer) endpoints' circuit breakers are in "
        "each state, over the live workers (an endpoint counts in its worst state: open, half_open, closed). An "
        "open circuit does not make the service unready: other runs still score. GET /v1/stats names them.")


class Stats(BaseModel):
    jobs_waiting: int
    jobs_pending: int
    tasks_waiting: int
    leases_pending: int
    dead_letters: int
    results_last_minute: int
    results_per_minute_5m: float
    raters: dict[str, dict[str, float | None]] = Field(
        description="Per rater: rated, skipped, per_minute_5m, honeypots (answered), honeypots_agreed, "
        "agreement (honeypots_agreed / honeypots; null before the first honeypot), and median_rater_seconds "
        "(the median `rater_seconds` of their last 1000 answers that carried it; null before the first).")
    median_rater_seconds: dict[str, float | None] = Field(
        default_factory=dict, description="Per task kind: the median `rater_seconds` of the last 1000 answers "
        "to tasks of that kind that carried it (null before the first).")
    circuits: dict[str, CircuitState] = Field(
        default_factory=dict, description="External endpoint -> the state of its circuit breaker, the worst "
        "over the live workers (each worker process keeps its own breakers): closed, half_open (one trial call "
        "goes out) or open (calls fail fast for RSS_BREAKER_RESET_S).")


class RaterStats(BaseModel):
    """What `GET /v1/stats` shows a rater token: that rater's own counters, nothing else (queue depths and
    honeypot counters would tell a rater which of their answers were honeypots)."""

    rater: str
    rated: float
    skipped: float
    per_minute_5m: float


# --- a run's learning curve and gallery (the operator page, /ui/runs) ------------------------

MAX_METRICS = 32  # metric names per evaluation
MAX_CLASSES = 256  # per-class IoUs per evaluation (masks are uint8)
GALLERY_IMAGES = 4  # images in a run's gallery
GALLERY_SIDE = 256  # the most rows or columns of a gallery mask (the learner subsamples larger ones)
MetricName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_./-]{0,63}$")]
Finite = Annotated[float, Field(allow_inf_nan=False, ge=-1e15, le=1e15)]  # a curve's value: finite, plottable
GallerySide = Annotated[int, Field(ge=1, le=GALLERY_SIDE)]


class GalleryItemCreate(BaseModel):
    """One image of a run's gallery: the policy's argmax mask and one mask sampled from it, on image
    ``image_id`` of the service's dataset, at ``shape`` (the image's size, or a subsampling of it)."""

    image_id: ImageId
    shape: tuple[GallerySide, GallerySide] = Field(description="(height, width) of both masks.")
    argmax: Mask
    sampled: Mask


class RunMetricsCreate(BaseModel):
    """One evaluation of a run, posted by its learner: replaces any point posted before for the same ``step``."""

    step: Count = Field(description="Training steps done when evaluated (the curve's x-axis).")
    metrics: dict[MetricName, Finite] = Field(
        max_length=MAX_METRICS, description="Finite numbers by name (`val_miou`, `val_pixel_acc`, `reward_mean`, "
        "...); a metric the learner could not compute at this step is left out, not sent as NaN.")
    per_class_iou: list[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None] | None = Field(
        None, max_length=MAX_CLASSES, description="Per class, its IoU on the validation split (null: the class is "
        "in neither the labels nor the predictions).")
    gallery: list[GalleryItemCreate] | None = Field(
        None, max_length=GALLERY_IMAGES, description="The policy's masks on a few images now; replaces the run's "
        "gallery.")


class MetricsPoint(BaseModel):
    step: int
    at: float = Field(description="When the service received it (epoch seconds).")
    metrics: dict[str, float]
    per_class_iou: list[float | None] | None = None


class RunMetricsAccepted(BaseModel):
    step: int
    replaced: bool = Field(description="A point of this step was there and is replaced.")
    points: int = Field(description="Points the run's curve holds now (the oldest steps go past the bound).")


class RunCurve(BaseModel):
    run_id: str
    max_points: int = Field(description="The most points kept per run: past it, the lowest steps are dropped.")
    points: list[MetricsPoint] = Field(description="By step, ascending.")


class GalleryItemPublic(BaseModel):
    image_id: str
    image_url: str
    argmax: PngMask
    sampled: PngMask


class RunGallery(BaseModel):
    step: int = Field(description="The evaluation that posted it.")
    at: float
    items: list[GalleryItemPublic]


class RunList(BaseModel):
    runs: list[RunPublic] = Field(description="Registered runs by id (the first 1000).")


class RunOverview(BaseModel):
    """What the operator page shows of one run. Queue depths, rater throughput, agreement and time per answer
    are the service's own counters: the run's own where the service keeps them per run, service-wide
    (``stats``) where it does not."""

    run: RunPublic
    pending_pixels: int = Field(description="Mask pixels of the run's episodes stored and not yet scored.")
    results_unread: int = Field(description="Entries of the run's results stream the learner has not read yet.")
    results_unacked: int = Field(description="Entries the learner read and has not acknowledged yet.")
    ratings_last_minute: int = Field(description="Answers from all raters in the current minute so far.")
    ratings_per_minute_5m: float = Field(description="Answers per minute from all raters over the 5 minutes "
                                                     "before the current one.")
    honeypots: int = Field(description="Honeypot answers, all raters.")
    honeypots_agreed: int
    agreement: float | None = Field(description="honeypots_agreed / honeypots; null before the first honeypot.")
    median_rater_seconds: float | None = Field(
        description="Human runs: the median `rater_seconds` of the last 1000 answers to tasks of the run's kind "
        "(all runs of that kind); null when none was recorded.")
    curve_points: int
    last_step: int | None
    gallery: RunGallery | None
    stats: Stats = Field(description="The service-wide figures of GET /v1/stats.")


# --- errors ---------------------------------------------------------------------------------

class ErrorPublic(BaseModel):
    """A refused request: ``detail`` says what is wrong, in a sentence."""

    detail: str


class FieldError(BaseModel, extra="allow"):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorPublic(BaseModel):
    """A body or parameter that does not fit the schema: one entry per field at fault."""

    detail: list[FieldError]
