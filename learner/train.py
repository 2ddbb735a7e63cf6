"""`rss train`: the training loop for the RL objectives (pixel/image rewards) and the CE baseline."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from learner.advantages import baseline_advantages, likelihood_weights, pixel_advantages, psd_advantages, syncan
from learner.checkpoint import load_checkpoint, load_weights, save_checkpoint
from learner.config import TrainArgs
from learner.data import Prefetcher, StepIndices
from learner.evaluate import evaluate
from learner.model import build_model
from learner.pipeline import Pipeline
from learner.policy import ScaleSchedule, action_logits, class_weights, sample_actions
from learner.precision import amp_dtype, grad_scaler, training_model
from learner.replay import (
    AnswerReplay,
    PairReplay,
    Ring,
    hesitation,
    pair_loss,
    point_queries,
    preferred,
    region_pairs,
)
from learner.report import gallery_rows, write_curves, write_gallery
from learner.rewards import Episodes, LabelStore, LocalRewardSource, Rewards, RewardSource
from learner.views import TrainViews
from learner.weights import load_pretrained
from rss_core.data import IGNORE_INDEX, PROCEDURAL, SegDataset, build_dataset
from rss_core.grid import ActionGrid, random_grid

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def rank_device(device: torch.device) -> torch.device:
    """Under torchrun, rank ``LOCAL_RANK`` of a node takes GPU ``LOCAL_RANK`` (``cuda`` alone means GPU 0 for all)."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


def log_rank_stats(path: Path, step: int, applied: list[tuple[torch.Tensor, dict]], counts: dict) -> None:
    """Under torchrun, each rank's own step statistics (``rank<r>.jsonl``): its rewards, SyncAN's std
    (the same on every rank when the all-reduce works) and its reward counts so far."""
    with path.open("a") as f:
        for loss, stats in applied:
            f.write(json.dumps({"step": step, **stats, "loss": float(loss.detach()), "rewards": counts}) + "\n")


def build_splits(args: TrainArgs) -> tuple[SegDataset, SegDataset]:
    names = args.class_names.split(",") if args.class_names else None
    common = {
        "root": args.data_root, "num_classes": args.num_classes, "class_names": names,
        "image_size": None if args.dataset in PROCEDURAL or not args.image_size else args.image_size,
        "shapes_size": args.shapes_size, "scenes_size": args.scenes_size, "seed": args.seed,
    }
    train = build_dataset(args.dataset, args.train_split, shapes_length=args.train_size, **common)
    val = build_dataset(args.dataset, args.val_split, shapes_length=args.val_size, **common)
    return train, val


def step_generator(seed: int, step: int, rank: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    """Randomness of one step is a pure function of (seed, step, rank): resume is exact."""
    return torch.Generator(device).manual_seed(((seed * 1_000_003 + step) * 101 + rank) % (2**63))


def load_batch(dataset: SegDataset, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
    return dataset.batch(indices)[0].to(device, non_blocking=True)


def advantages(
    args: TrainArgs, logp: torch.Tensor, actions: torch.Tensor, rewards: Rewards
) -> tuple[torch.Tensor, dict]:
    """Per-action advantages (B, K, h, w) of sampled ``actions`` under ``logp``, and step statistics."""
    k = actions.shape[1]
    likelihood = args.resolved_estimator() == "likelihood"
    if args.reward == "image":
        assert rewards.image is not None
        r = rewards.image.to(logp.dtype)
        if args.psd and k >= 2:
            adv = psd_advantages(r, actions, logp.shape[1])
        else:
            adv = baseline_advantages(r, actions.shape[2:])
        mean_reward = float(r[rewards.keep].mean() if rewards.keep is not None and rewards.keep.any() else r.mean())
    else:
        assert rewards.pixel is not None and rewards.valid is not None
        adv = pixel_advantages(rewards.pixel, rewards.valid, likelihood)
        mean_reward = float(rewards.pixel.sum() / (rewards.valid.sum() * k).clamp(min=1))
    if rewards.keep is not None:  # images whose rewards did not all arrive take no part
        adv = adv * rewards.keep.view(-1, *[1] * (adv.ndim - 1)).to(adv.dtype)
    if likelihood:
        adv = adv * likelihood_weights(logp, args.max_weight).gather(1, actions)
    std = 0.0
    if args.syncan:
        adv, std = syncan(adv)
    return adv.detach(), {"reward": mean_reward, "adv_std": std}


def entropy_bonus(args: TrainArgs, logp: torch.Tensor) -> torch.Tensor:
    return args.entropy_coef * -(logp.exp() * logp).sum(1).mean() if args.entropy_coef else logp.new_zeros(())


def rl_loss(
    args: TrainArgs,
    logits: torch.Tensor,
    indices: torch.Tensor,
    grid: ActionGrid,
    source: RewardSource,
    generator: torch.Generator,
    replay: Ring | None = None,
    labels: torch.Tensor | None = None,
    views: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Sample K masks, score them, and return the policy-gradient loss and step statistics
    (``replay``: keep the answers). With --pairs region the masks are a question rather than samples,
    and the answer is learned from as a Bradley-Terry term where the two differ."""
    k = args.resolved_samples()
    logp = F.log_softmax(action_logits(logits, grid), dim=1)  # (B, C, h, w)
    if args.pairs == "region":
        actions = region_pairs(logp, args.region_size, generator, args.region_margin, k)
    else:
        actions = sample_actions(logp, k, generator)
    query = None
    if args.first_mask == "mode" or args.points:  # raters answer the policy's best guess first
        actions[:, 0] = logp.detach().argmax(1).to(actions.dtype)
    if args.points:  # point verification: only these pixels are asked about
        query = point_queries(logp, args.points, args.point_query, generator)
    rewards = source.score(Episodes(indices, actions, grid, tuple(logits.shape[-2:]), args.reward, query, labels,
                                    views))
    if query is not None:  # nothing but the answers to the questions asked, whatever the source returned
        assert rewards.pixel is not None and rewards.valid is not None
        rewards.valid = rewards.valid & query
        rewards.pixel = rewards.pixel * rewards.valid.unsqueeze(1)
    if isinstance(replay, AnswerReplay):
        assert rewards.pixel is not None and rewards.valid is not None
        replay.add(indices, actions, rewards.pixel, rewards.valid, grid, rewards.keep, rewards.named)
    elif isinstance(replay, PairReplay):
        assert rewards.image is not None
        replay.add(indices, actions, rewards.image, grid, rewards.keep, best=args.human_task == "best")
    if args.pairs == "region":
        assert rewards.image is not None
        rows, win, lose = preferred(actions, rewards.image, rewards.keep, best=args.human_task == "best")
        loss, pixels = pair_loss(logp[rows], win, lose)
        return loss - entropy_bonus(args, logp), {"reward": float(rewards.image.mean()), "pairs": len(rows),
                                                  "pair_pixels": pixels / max(len(rows), 1)}
    adv, stats = advantages(args, logp, actions, rewards)
    # sum_k A_k log pi(a_k), folded per class so the graph has no K dimension.
    pg_loss = -(class_weights(adv, actions, logp.shape[1]) * logp).sum() / adv.numel()
    return pg_loss - entropy_bonus(args, logp), stats


def build_source(args: TrainArgs, train_ds: SegDataset, device: torch.device,
                 labels: LabelStore | None = None) -> RewardSource:
    if args.objective == "rl" and args.reward_source == "remote":
        from learner.remote import RemoteRewardSource

        return RemoteRewardSource(args, train_ds)
    return LocalRewardSource(train_ds, device, args.metric, labels)


@dataclasses.dataclass
class Run:
    """Everything one training run holds between steps: what `setup` builds and `resume` restores."""

    args: TrainArgs
    rank: int
    device: torch.device
    out: Path
    train_ds: SegDataset
    val_ds: SegDataset
    core: torch.nn.Module  # the model itself; `model` is what the training forwards call (precision.py)
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: ScaleSchedule
    source: RewardSource
    labels: LabelStore  # only the CE baseline reads labels directly
    pipeline: Pipeline | None
    use_psr: bool
    replay: Ring | None
    ckpt_path: Path
    loop_path: Path  # rank 0's checkpoint holds the model; every rank keeps its own rewards in flight
    rank_log: Path | None = None
    scaler: torch.amp.GradScaler | None = None  # --amp fp16
    indices: StepIndices | None = None  # which images each step trains on (set by setup)
    prefetch: Prefetcher | None = None  # --data-workers: the batches of the steps ahead
    views: TrainViews | None = None  # --crop-size: random views of the images (learner/views.py)
    start: int = 0
    elapsed: float = 0.0
    step_seconds: float = 0.0
    height: int = 0
    width: int = 0


SourceFactory = Callable[[TrainArgs, SegDataset, torch.device], RewardSource]


def setup(args: TrainArgs, make_source: SourceFactory | None = None) -> Run:
    """Process group, threads, device, data, model, optimizer, PSR schedule and reward source
    (``make_source``: one of the caller's, e.g. the simulated raters of `rss bench feedback`)."""
    args.validate()
    rank = int(os.environ.get("RANK", "0"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = rank_device(resolve_device(args.device))
    amp_dtype(args, device)  # --amp fp16 off CUDA is refused before any work
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    train_ds, val_ds = build_splits(args)
    core = build_model(train_ds.num_classes, args.arch, args.width, args.depth, aux=args.aux_weight > 0)
    if args.weights and not args.resume:
        log.info("starting from the weights of %s (%s)", args.weights, load_pretrained(core, args.weights))
    core = core.to(device, memory_format=torch.channels_last) if args.channels_last else core.to(device)
    if args.init_from and not args.resume:
        log.info("starting from the weights of %s (%s)", args.init_from, load_weights(core, args.init_from, device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    optimizer = torch.optim.Adam(core.parameters(), lr=args.lr)
    schedule = ScaleSchedule(list(args.psr_scales), args.steps, args.psr_rule,
                             list(args.psr_fractions) if args.psr_fractions else None, args.psr_patience)
    labels = LabelStore(train_ds, device, args.label_cache_mb * 2**20)  # one store: CE and ground truth share it
    source = make_source(args, train_ds, device) if make_source else build_source(args, train_ds, device, labels)
    pipeline = Pipeline(args, source) if args.objective == "rl" and args.max_inflight > 0 else None
    ckpt_path = out / "checkpoint.pt"
    run = Run(args, rank, device, out, train_ds, val_ds, core, core, optimizer, schedule, source, labels, pipeline,
              use_psr=args.objective == "rl" and args.reward == "image" and args.psr,
              replay=(PairReplay(args.replay, device) if args.reward == "image"
                      else AnswerReplay(args.replay, device, args.replay_margin, args.replay_balance)) if args.replay
              else None, ckpt_path=ckpt_path,
              loop_path=ckpt_path if rank == 0 else out / f"checkpoint.rank{rank}.pt", scaler=grad_scaler(args, device))
    if args.resume:
        resume(run)
    elif (out / "metrics.jsonl").exists() and rank == 0:
        (out / "metrics.jsonl").unlink()
    if dist.is_initialized() and dist.get_world_size() > 1:
        run.rank_log = out / f"rank{rank}.jsonl"
        if not args.resume:
            run.rank_log.unlink(missing_ok=True)
    # Under torchrun every rank trains on its own batches; DDP averages the gradients and
    # SyncAN (advantages.syncan) gives every rank the same advantage scale.
    run.model = training_model(core, args, device, ddp=dist.is_initialized())
    # The first batch builds in-memory datasets (shapes: a few seconds), before the clock starts.
    run.height, run.width = load_batch(train_ds, torch.zeros(1, dtype=torch.long), device).shape[-2:]
    if args.crop_size:
        if make_source is not None:
            raise ValueError("--crop-size needs the in-process ground truth: this reward source looks labels up by "
                             "image, not by view")
        run.views = TrainViews(args.crop_size, tuple(args.scale_range), jitter=args.color_jitter)
        run.height = run.width = args.crop_size
    run.indices = StepIndices(len(train_ds), args.batch_size * args.image_pool, args.seed, rank)
    workers = args.resolved_data_workers()
    if workers or run.views is not None:  # views are drawn by the same code with or without workers
        run.prefetch = Prefetcher(train_ds, run.indices, run.start, args.steps, workers=workers,
                                  pin_memory=device.type == "cuda", views=run.views, seed=args.seed, rank=rank)
    log.info("%s: %d train / %d val images of %dx%d, %d classes; training on %s",
             args.dataset, len(train_ds), len(val_ds), run.height, run.width, train_ds.num_classes, device)
    return run


def resume(run: Run) -> None:
    """Restore model, optimizer, schedule, clock, reward counts and the batches in flight."""
    ckpt = load_checkpoint(run.ckpt_path, run.device)
    run.core.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.schedule.load_state_dict(ckpt["schedule"])
    run.start, run.elapsed, run.step_seconds = ckpt["step"], ckpt["seconds"], ckpt["step_seconds"]
    loop = ckpt if run.rank == 0 else load_checkpoint(run.loop_path, run.device)
    run.source.load_state_dict(loop.get("source", {}), run.start)
    if run.pipeline is not None:
        run.pipeline.load_state_dict(loop.get("inflight", []), lambda i: load_batch(run.train_ds, i, run.device),
                                     run.device)
    if run.replay is not None:
        run.replay.load_state_dict(loop.get("replay", {}))
    if run.scaler is not None and "scaler" in ckpt:
        run.scaler.load_state_dict(ckpt["scaler"])
    log.info("resumed from %s at step %d (scale %s, %d batches in flight)", run.ckpt_path, run.start,
             run.schedule.scale, len(loop.get("inflight", [])))


def save(run: Run, step: int) -> None:
    """Checkpoint (rank 0: the model too), then acknowledge what the saved updates applied."""
    loop = {"source": run.source.state_dict(), "inflight": run.pipeline.state_dict() if run.pipeline else [],
            "replay": run.replay.state_dict() if run.replay else {}}
    if run.rank == 0:
        save_checkpoint(run.ckpt_path, model=run.core.state_dict(), optimizer=run.optimizer.state_dict(),
                        schedule=run.schedule.state_dict(), step=step, seconds=run.elapsed,
                        step_seconds=run.step_seconds, args=dataclasses.asdict(run.args),
                        **({"scaler": run.scaler.state_dict()} if run.scaler is not None else {}), **loop)
    else:
        save_checkpoint(run.loop_path, step=step, **loop)
    run.source.checkpointed(step)  # what the saved updates applied can be acknowledged now


def descend(run: Run, loss: torch.Tensor) -> None:
    """One optimizer step on ``loss`` (--amp fp16: through the gradient scaler)."""
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is None:
        loss.backward()
        run.optimizer.step()
        return
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()


def optimize(run: Run, loss: torch.Tensor, step: int) -> None:
    descend(run, loss)
    run.source.commit(step)  # record (and, unless a checkpoint needs them, acknowledge) the rewards applied


@torch.no_grad()
def hesitant_images(model: torch.nn.Module, indices: torch.Tensor, images: torch.Tensor,
                    batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``batch`` of ``images`` (with their ``indices``) the policy hesitates most about: highest mean
    (1 - margin)^4, margin = pi(1st) - pi(2nd) per pixel, the weight region pairs and points draw by."""
    was_training = model.training
    model.eval()  # batch-norm statistics are not updated by looking at candidates
    top = F.softmax(model(images), dim=1).topk(2, dim=1).values
    model.train(was_training)
    score = hesitation(top[:, 0] - top[:, 1]).mean(1)
    chosen = score.topk(batch).indices.sort().values
    return indices[chosen.cpu()], images[chosen]


def train_step(run: Run, step: int) -> tuple[list[tuple[torch.Tensor, dict]], int]:
    """One step: CE, on-policy RL, or (``--max-inflight``) sample ahead and apply what is due.

    Returns the updates applied (loss, statistics) and the PSR scale the step sampled at."""
    args, device = run.args, run.device
    gen = step_generator(args.seed, step, run.rank)
    indices = run.indices(step, gen)  # the first draw of the step's generator, as the prefetcher draws it
    view_labels = views = None  # --crop-size: the labels of these views (no store keeps them by image), the views
    if run.prefetch is not None:  # read ahead by the DataLoader's workers (learner/data.py)
        _, images, labels, views = run.prefetch.take(step, indices)
        if run.views is not None:
            view_labels = labels.to(device, non_blocking=True).long()
        else:
            views = None
            run.labels.put(indices, labels)
        images = images.to(device, non_blocking=True)
    else:
        images = load_batch(run.train_ds, indices, device)
    if args.image_pool > 1:  # ask about the images where the policy hesitates most
        indices, images = hesitant_images(run.model, indices, images, args.batch_size)
    scale = run.schedule.scale if run.use_psr else 0
    sample_gen = gen if device.type == "cpu" else step_generator(args.seed, step, run.rank, device)
    applied: list[tuple[torch.Tensor, dict]] = []
    if run.pipeline is not None:  # sample ahead; apply what is due (pipeline.py)
        grid = random_grid(scale, args.psr_mode, run.height, run.width, gen) if scale else ActionGrid(0)
        run.pipeline.sample_and_post(run.model, step, indices, images, grid, sample_gen)
        while run.pipeline.due(last=step == args.steps - 1):
            update = run.pipeline.apply_oldest(run.model, step, advantages)
            if update is not None:
                optimize(run, update[0], step)
                applied.append(update)
        return applied, scale
    if args.objective == "ce":
        loss, stats = ce_loss(run, images, indices, view_labels)
        optimize(run, loss, step)
        return [(loss, stats)], scale
    logits = run.model(images)
    grid = random_grid(scale, args.psr_mode, run.height, run.width, gen) if scale else ActionGrid(0)
    run.source.policy_version = step
    loss, stats = rl_loss(args, logits, indices, grid, run.source, sample_gen, run.replay, view_labels, views)
    if run.replay is not None and run.replay.size:  # learn again from kept answers (replay.py)
        replay_loss, replay_stats = replayed_loss(run, gen)
        loss = loss + args.replay_weight * replay_loss
        stats = {**stats, **replay_stats, "replay_loss": float(replay_loss.detach())}
    optimize(run, loss, step)
    for _ in range(args.replay_updates if run.replay is not None and run.replay.size else 0):
        replay_loss, _ = replayed_loss(run, gen)  # kept answers alone: no new rewards to commit
        descend(run, args.replay_weight * replay_loss)
    return [(loss, stats)], scale


def ce_loss(run: Run, images: torch.Tensor, indices: torch.Tensor,
            labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The supervised baseline: cross-entropy on the labels (``labels``: those of the views, else by index), plus
    --aux-weight times that of torchvision's auxiliary head (its references' recipe: 0.5)."""
    labels = run.labels(indices) if labels is None else labels
    if not run.args.aux_weight:
        return F.cross_entropy(run.model(images), labels, ignore_index=IGNORE_INDEX), {"reward": float("nan")}
    logits, aux = run.model(images, aux=True)
    main_loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    aux_loss = F.cross_entropy(aux, labels, ignore_index=IGNORE_INDEX)
    return main_loss + run.args.aux_weight * aux_loss, {"reward": float("nan"), "aux_loss": float(aux_loss.detach())}


def replayed_loss(run: Run, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
    """The supervised term over --replay-batch kept answers drawn by ``gen`` (learner/replay.py)."""
    assert run.replay is not None and run.replay.indices is not None
    slots = run.replay.sample(run.args.replay_batch, gen)
    logits = run.model(load_batch(run.train_ds, run.replay.indices[slots], run.device))
    return run.replay.loss(logits, slots)


def evaluate_and_log(run: Run, done: int, window: list[dict], scale: int) -> dict:
    """Validate, summarise the steps since the last evaluation, append it to metrics.jsonl and hand it to the reward
    source (rank 0)."""
    t1 = time.perf_counter()
    metrics = evaluate(run.core, run.val_ds, run.device)
    run.elapsed += time.perf_counter() - t1
    rewards = torch.tensor([w["reward"] for w in window] or [float("nan")])
    summary = {
        # step_seconds counts from step 0, across resumes: per step of all of them
        "step": done, "seconds": round(run.elapsed, 3), "sec_per_step": run.step_seconds / (done or 1),
        "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()) if len(window) > 1 else 0.0,
        "loss": sum(w["loss"] for w in window) / max(len(window), 1), "scale": scale,
        "val_miou": round(metrics["miou"], 5), "val_pixel_acc": round(metrics["pixel_acc"], 5),
        "per_class_iou": metrics["per_class_iou"],
    }
    for key in ("clipfrac", "staleness"):  # pipelined updates (--max-inflight): their mean
        values = [w[key] for w in window if key in w]
        if values:
            summary[key] = sum(values) / len(values)
    if run.rank == 0:
        with (run.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(summary) + "\n")
        log.info("step %d: val mIoU %.4f, pixel acc %.4f, reward %.4f, scale %s",
                 done, metrics["miou"], metrics["pixel_acc"], summary["reward_mean"], scale or "full")
        run.source.report(summary, run.core)  # through the service: its operator page's curve and gallery
    return summary


def write_report(run: Run, last_eval: dict, gallery_start: tuple[int, list] | None) -> dict:
    """final.json, curves.png and gallery.png (rank 0); returns final.json's contents."""
    args = run.args
    final = {
        "val_miou": last_eval.get("val_miou"), "val_pixel_acc": last_eval.get("val_pixel_acc"),
        "per_class_iou": last_eval.get("per_class_iou"), "class_names": run.val_ds.class_names,
        "steps": args.steps, "seconds": round(run.elapsed, 3),
        "sec_per_step": run.step_seconds / max(args.steps, 1),
        # images trained on per second of step time (this rank's, under torchrun)
        "images_per_s": round(args.batch_size * args.steps / run.step_seconds, 3) if run.step_seconds else None,
        "peak_cuda_memory_bytes": torch.cuda.max_memory_allocated(run.device) if run.device.type == "cuda" else None,
        "samples": args.resolved_samples(), "device": str(run.device), "config": dataclasses.asdict(args),
        "rewards": run.source.stats(),
    }
    if run.rank == 0 and gallery_start is not None:
        (run.out / "final.json").write_text(json.dumps(final, indent=2) + "\n")
        write_curves(run.out / "metrics.jsonl", run.out / "curves.png")
        write_gallery(gallery_start[1], gallery_rows(run.core, run.val_ds, run.device), run.out / "gallery.png",
                      (gallery_start[0], args.steps))
    return final


def train(args: TrainArgs, make_source: SourceFactory | None = None) -> dict:
    """Train and evaluate; returns the contents of final.json."""
    run = setup(args, make_source)
    window: list[dict] = []
    last_eval: dict = {}
    gallery_start = (run.start, gallery_rows(run.core, run.val_ds, run.device)) if run.rank == 0 else None
    bar = tqdm(total=args.steps, initial=run.start, disable=not args.progress or run.rank != 0, dynamic_ncols=True)
    for step in range(run.start, args.steps):
        t0 = time.perf_counter()
        applied, scale = train_step(run, step)
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        run.step_seconds += dt
        run.elapsed += dt
        for loss, stats in applied:
            window.append({**stats, "loss": float(loss.detach())})
            if run.use_psr and run.schedule.update(step, stats["reward"]):
                log.info("step %d: PSR scale -> %s", step + 1, run.schedule.scale or "full")
        if run.rank_log is not None:
            log_rank_stats(run.rank_log, step + 1, applied, run.source.stats())
        bar.update(1)
        reward = f"{applied[-1][1]['reward']:.3f}" if applied else "-"
        bar.set_postfix(reward=reward, scale=scale or "full", val_miou=last_eval.get("val_miou", "-"),
                        **run.source.stats())
        done = step + 1
        if done % args.eval_every == 0 or done == args.steps:
            last_eval = evaluate_and_log(run, done, window, scale)
            window = []
        if done % args.checkpoint_every == 0 or done == args.steps:
            save(run, done)
    bar.close()
    if run.prefetch is not None:
        run.prefetch.close()
    run.source.close()
    return write_report(run, last_eval, gallery_start)
