"""`rss train`: the training loop for the RL objectives (pixel/image rewards) and the CE baseline."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from learner.advantages import baseline_advantages, likelihood_weights, pixel_advantages, psd_advantages, syncan
from learner.checkpoint import load_checkpoint, save_checkpoint
from learner.config import TrainArgs
from learner.evaluate import evaluate
from learner.model import build_model
from learner.pipeline import Pipeline
from learner.policy import ScaleSchedule, action_logits, class_weights, sample_actions
from learner.report import gallery_rows, write_curves, write_gallery
from learner.rewards import Episodes, LabelStore, LocalRewardSource, Rewards, RewardSource
from rss_core.data import IGNORE_INDEX, SegDataset, build_dataset
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
        "image_size": None if args.dataset == "shapes" else args.image_size,
        "shapes_size": args.shapes_size, "seed": args.seed,
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
) -> tuple[torch.Tensor, dict]:
    """Sample K masks, score them, and return the policy-gradient loss and step statistics."""
    k = args.resolved_samples()
    logp = F.log_softmax(action_logits(logits, grid), dim=1)  # (B, C, h, w)
    actions = sample_actions(logp, k, generator)
    rewards = source.score(Episodes(indices, actions, grid, tuple(logits.shape[-2:]), args.reward))
    adv, stats = advantages(args, logp, actions, rewards)
    # sum_k A_k log pi(a_k), folded per class so the graph has no K dimension.
    pg_loss = -(class_weights(adv, actions, logp.shape[1]) * logp).sum() / adv.numel()
    return pg_loss - entropy_bonus(args, logp), stats


def build_source(args: TrainArgs, train_ds: SegDataset, device: torch.device) -> RewardSource:
    if args.objective == "rl" and args.reward_source == "remote":
        from learner.remote import RemoteRewardSource

        return RemoteRewardSource(args, train_ds)
    return LocalRewardSource(train_ds, device, args.metric)


def train(args: TrainArgs) -> dict:
    """Train and evaluate; returns the contents of final.json."""
    args.validate()
    rank = int(os.environ.get("RANK", "0"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = rank_device(resolve_device(args.device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    train_ds, val_ds = build_splits(args)
    core = build_model(train_ds.num_classes, args.arch, args.width, args.depth).to(device)
    optimizer = torch.optim.Adam(core.parameters(), lr=args.lr)
    schedule = ScaleSchedule(list(args.psr_scales), args.steps, args.psr_rule,
                             list(args.psr_fractions) if args.psr_fractions else None, args.psr_patience)
    source = build_source(args, train_ds, device)
    labels = LabelStore(train_ds, device)  # only the CE baseline reads labels directly

    use_psr = args.objective == "rl" and args.reward == "image" and args.psr
    pipeline = Pipeline(args, source) if args.objective == "rl" and args.max_inflight > 0 else None
    start, elapsed, step_seconds = 0, 0.0, 0.0
    ckpt_path = out / "checkpoint.pt"
    # Rank 0's checkpoint holds the model; every rank keeps its own rewards in flight (its own run).
    loop_path = ckpt_path if rank == 0 else out / f"checkpoint.rank{rank}.pt"
    if args.resume:
        ckpt = load_checkpoint(ckpt_path, device)
        core.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        start, elapsed, step_seconds = ckpt["step"], ckpt["seconds"], ckpt["step_seconds"]
        loop = ckpt if rank == 0 else load_checkpoint(loop_path, device)
        source.load_state_dict(loop.get("source", {}), start)
        if pipeline is not None:
            pipeline.load_state_dict(loop.get("inflight", []), lambda i: load_batch(train_ds, i, device), device)
        log.info("resumed from %s at step %d (scale %s, %d batches in flight)", ckpt_path, start,
                 schedule.scale, len(loop.get("inflight", [])))
    elif (out / "metrics.jsonl").exists() and rank == 0:
        (out / "metrics.jsonl").unlink()
    rank_log = out / f"rank{rank}.jsonl" if dist.is_initialized() and dist.get_world_size() > 1 else None
    if rank_log is not None and not args.resume:
        rank_log.unlink(missing_ok=True)
    # Under torchrun every rank trains on its own batches; DDP averages the gradients and
    # SyncAN (advantages.syncan) gives every rank the same advantage scale.
    model = torch.nn.parallel.DistributedDataParallel(core) if dist.is_initialized() else core

    def save(step: int) -> None:
        loop = {"source": source.state_dict(), "inflight": pipeline.state_dict() if pipeline else []}
        if rank == 0:
            save_checkpoint(ckpt_path, model=core.state_dict(), optimizer=optimizer.state_dict(),
                            schedule=schedule.state_dict(), step=step, seconds=elapsed,
                            step_seconds=step_seconds, args=dataclasses.asdict(args), **loop)
        else:
            save_checkpoint(loop_path, step=step, **loop)
        source.checkpointed(step)  # what the saved updates applied can be acknowledged now

    def optimize(loss: torch.Tensor, step: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        source.commit(step)  # record (and, unless a checkpoint needs them, acknowledge) the rewards applied

    window: list[dict] = []
    last_eval: dict = {}
    # The first batch builds in-memory datasets (shapes: a few seconds), before the clock starts.
    height, width = load_batch(train_ds, torch.zeros(1, dtype=torch.long), device).shape[-2:]
    log.info("%s: %d train / %d val images of %dx%d, %d classes; training on %s",
             args.dataset, len(train_ds), len(val_ds), height, width, train_ds.num_classes, device)
    gallery_start = (start, gallery_rows(core, val_ds, device)) if rank == 0 else None
    bar = tqdm(total=args.steps, initial=start, disable=not args.progress or rank != 0, dynamic_ncols=True)
    for step in range(start, args.steps):
        t0 = time.perf_counter()
        gen = step_generator(args.seed, step, rank)
        indices = torch.randint(len(train_ds), (args.batch_size,), generator=gen)
        images = load_batch(train_ds, indices, device)
        scale = schedule.scale if use_psr else 0
        sample_gen = gen if device.type == "cpu" else step_generator(args.seed, step, rank, device)
        applied: list[tuple[torch.Tensor, dict]] = []
        if pipeline is not None:  # sample ahead; apply what is due (pipeline.py)
            grid = random_grid(scale, args.psr_mode, height, width, gen) if scale else ActionGrid(0)
            pipeline.sample_and_post(model, step, indices, images, grid, sample_gen)
            while pipeline.due(last=step == args.steps - 1):
                update = pipeline.apply_oldest(model, step, advantages)
                if update is not None:
                    optimize(update[0], step)
                    applied.append(update)
        else:
            logits = model(images)
            if args.objective == "ce":
                loss = F.cross_entropy(logits, labels(indices), ignore_index=IGNORE_INDEX)
                stats = {"reward": float("nan")}
            else:
                grid = random_grid(scale, args.psr_mode, height, width, gen) if scale else ActionGrid(0)
                source.policy_version = step
                loss, stats = rl_loss(args, logits, indices, grid, source, sample_gen)
            optimize(loss, step)
            applied.append((loss, stats))
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        step_seconds += dt
        elapsed += dt
        for loss, stats in applied:
            window.append({**stats, "loss": float(loss.detach())})
            if use_psr and schedule.update(step, stats["reward"]):
                log.info("step %d: PSR scale -> %s", step + 1, schedule.scale or "full")
        if rank_log is not None:
            log_rank_stats(rank_log, step + 1, applied, source.stats())
        bar.update(1)
        reward = f"{applied[-1][1]['reward']:.3f}" if applied else "-"
        bar.set_postfix(reward=reward, scale=scale or "full", val_miou=last_eval.get("val_miou", "-"), **source.stats())
        done = step + 1
        if done % args.eval_every == 0 or done == args.steps:
            t1 = time.perf_counter()
            metrics = evaluate(core, val_ds, device)
            elapsed += time.perf_counter() - t1
            rewards = torch.tensor([w["reward"] for w in window] or [float("nan")])
            last_eval = {
                "step": done, "seconds": round(elapsed, 3), "sec_per_step": step_seconds / (done - start or 1),
                "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()) if len(window) > 1 else 0.0,
                "loss": sum(w["loss"] for w in window) / max(len(window), 1), "scale": scale,
                "val_miou": round(metrics["miou"], 5), "val_pixel_acc": round(metrics["pixel_acc"], 5),
                "per_class_iou": metrics["per_class_iou"],
            }
            for key in ("clipfrac", "staleness"):  # pipelined updates (--max-inflight): their mean
                values = [w[key] for w in window if key in w]
                if values:
                    last_eval[key] = sum(values) / len(values)
            window = []
            if rank == 0:
                with (out / "metrics.jsonl").open("a") as f:
                    f.write(json.dumps(last_eval) + "\n")
                log.info("step %d: val mIoU %.4f, pixel acc %.4f, reward %.4f, scale %s",
                         done, metrics["miou"], metrics["pixel_acc"], last_eval["reward_mean"], scale or "full")
        if done % args.checkpoint_every == 0 or done == args.steps:
            save(done)
    bar.close()
    source.close()
    final = {
        "val_miou": last_eval.get("val_miou"), "val_pixel_acc": last_eval.get("val_pixel_acc"),
        "per_class_iou": last_eval.get("per_class_iou"), "class_names": val_ds.class_names,
        "steps": args.steps, "seconds": round(elapsed, 3), "sec_per_step": step_seconds / max(args.steps - start, 1),
        "samples": args.resolved_samples(), "device": str(device), "config": dataclasses.asdict(args),
        "rewards": source.stats(),
    }
    if rank == 0:
        (out / "final.json").write_text(json.dumps(final, indent=2) + "\n")
        write_curves(out / "metrics.jsonl", out / "curves.png")
        write_gallery(gallery_start[1], gallery_rows(core, val_ds, device), out / "gallery.png",
                      (gallery_start[0], args.steps))
    return final
