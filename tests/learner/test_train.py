"""Training: exact resume, outputs, folder datasets, and subprocess smoke runs of the CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from learner.checkpoint import load_checkpoint
from learner.config import IMAGE_BEST, TrainArgs
from learner.train import train
from tests.helpers.cli import run_rss

TINY = {
    "train_size": 12, "val_size": 4, "shapes_size": 32, "batch_size": 4, "eval_every": 2,
    "progress": False, "threads": 1, "width": 4, "device": "cpu",
}


def test_resume_gives_exactly_the_same_next_steps(tmp_path):
    # PSR's plateau rule depends only on history, so the split run sees the same schedule.
    cfg = TrainArgs(**TINY, samples=2, psr=True, psr_scales=(8, 0), psr_rule="plateau", psr_patience=2,
                    steps=6, checkpoint_every=3, out=str(tmp_path / "straight"))
    train(cfg)
    split = dataclasses.replace(cfg, out=str(tmp_path / "split"), steps=3)
    train(split)
    train(dataclasses.replace(split, steps=6, resume=True))
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    assert a["schedule"] == b["schedule"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    lines = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 3, 4, 6]  # appended after the resume (3: end of the first run)


def test_init_from_starts_from_another_runs_weights(tmp_path):
    """--init-from a CE checkpoint (or its bare state dict): the RL run starts from those weights."""
    ce = train(TrainArgs(**TINY, objective="ce", steps=10, lr=0.01, out=str(tmp_path / "ce")))
    weights = load_checkpoint(tmp_path / "ce" / "checkpoint.pt")["model"]
    torch.save(weights, tmp_path / "weights.pt")
    # one step at a negligible learning rate: the run's weights stay (to float precision) what it started from
    warm = TrainArgs(**{**TINY, "eval_every": 1}, samples=2, steps=1, lr=1e-12,
                     init_from=str(tmp_path / "ce" / "checkpoint.pt"), out=str(tmp_path / "warm"))
    runs = {"checkpoint": train(warm),
            "state dict": train(dataclasses.replace(warm, init_from=str(tmp_path / "weights.pt"),
                                                    out=str(tmp_path / "warm-sd"))),
            "random init": train(dataclasses.replace(warm, init_from=None, out=str(tmp_path / "cold")))}
    for name, out in (("checkpoint", "warm"), ("state dict", "warm-sd"), ("random init", "cold")):
        started = load_checkpoint(tmp_path / out / "checkpoint.pt")["model"]
        same = all(torch.allclose(started[k].float(), v.float(), atol=1e-6) for k, v in weights.items())
        assert same == (name != "random init"), name
        if name != "random init":  # one step at lr 1e-12 changes no argmax: CE's own final mIoU
            assert runs[name]["val_miou"] == ce["val_miou"], name


def test_init_from_refuses_weights_that_do_not_fit(tmp_path):
    train(TrainArgs(**{**TINY, "width": 8}, objective="ce", steps=1, out=str(tmp_path / "wide")))
    (tmp_path / "notes.txt").write_text("not weights")
    narrow = TrainArgs(**TINY, samples=2, steps=1, out=str(tmp_path / "narrow"))
    fits = r"--init-from .*do not fit this model \(--arch, --width.* is \(32, 64, 3, 3\) there, \(16, 32, 3, 3\) here"
    with pytest.raises(ValueError, match=fits):
        train(dataclasses.replace(narrow, init_from=str(tmp_path / "wide" / "checkpoint.pt")))
    with pytest.raises(ValueError, match="--init-from .*not a PyTorch checkpoint"):
        train(dataclasses.replace(narrow, init_from=str(tmp_path / "notes.txt")))
    with pytest.raises(FileNotFoundError, match="--init-from .*no such file"):
        train(dataclasses.replace(narrow, init_from=str(tmp_path / "missing.pt")))


def test_outputs_and_final_json(tmp_path):
    final = train(TrainArgs(**TINY, steps=4, out=str(tmp_path / "run")))
    out = tmp_path / "run"
    for name in ("metrics.jsonl", "final.json", "checkpoint.pt", "curves.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "final.json").read_text())
    assert saved == json.loads(json.dumps(final))
    for key in ("val_miou", "val_pixel_acc", "per_class_iou", "steps", "seconds", "config"):
        assert key in saved
    assert saved["images_per_s"] > 0 and saved["peak_cuda_memory_bytes"] is None  # CPU: no CUDA peak
    assert saved["config"]["reward"] == "image" and saved["samples"] == IMAGE_BEST["samples"]
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("step", "seconds", "reward_mean", "reward_std", "scale", "val_miou", "val_pixel_acc", "per_class_iou"):
        assert key in row


@pytest.mark.parametrize("bad, flag", [
    ({"samples": -1}, "--samples"),
    ({"steps": 0}, "--steps"),
    ({"max_weight": 0.5}, "--max-weight"),
    ({"dataset": "voc"}, "--data-root"),
    ({"class_names": "a,b"}, "--class-names"),
])
def test_bad_flags_are_rejected_naming_the_flag(tmp_path, bad, flag):
    with pytest.raises(ValueError, match=flag):
        train(TrainArgs(**{**TINY, **bad}, out=str(tmp_path)))


def test_trains_on_a_voc_layout_folder(tmp_path, voc_root):
    final = train(TrainArgs(**{**TINY, "image_size": 32}, dataset="voc", data_root=str(voc_root),
                            steps=2, out=str(tmp_path / "voc")))
    assert len(final["per_class_iou"]) == 21
    assert final["class_names"][1] == "aeroplane"
    assert (tmp_path / "voc" / "checkpoint.pt").is_file()


def test_num_classes_override_for_custom_data(tmp_path, voc_root):
    final = train(TrainArgs(**{**TINY, "image_size": 32}, dataset="voc", data_root=str(voc_root),
                            num_classes=4, class_names="bg,box1,box2,box3", steps=2, out=str(tmp_path / "c")))
    assert final["class_names"] == ["bg", "box1", "box2", "box3"]
    assert len(final["per_class_iou"]) == 4


def test_cli_train_and_eval_smoke(tmp_path):
    out = tmp_path / "cli"
    r = run_rss("train", "--steps", "2", "--train-size", "8", "--val-size", "4", "--shapes-size", "32",
                "--batch-size", "2", "--width", "4", "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "report in" in r.stdout
    r = run_rss("eval", "--checkpoint", str(out / "checkpoint.pt"), "--json", str(tmp_path / "eval.json"))
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["val_miou"] == pytest.approx(json.loads((out / "final.json").read_text())["val_miou"], abs=1e-4)
    assert set(metrics["per_class_iou"]) == {"background", "ellipse", "rectangle", "triangle"}


def test_cli_errors_are_clear(tmp_path):
    r = run_rss("train", "--dataset", "voc", "--out", str(tmp_path))
    assert r.returncode == 2 and "--data-root" in r.stderr
    r = run_rss("train", "--dataset", "voc", "--data-root", str(tmp_path / "nope"), "--out", str(tmp_path))
    assert r.returncode == 2 and "nope" in r.stderr
    r = run_rss("eval", "--checkpoint", str(tmp_path / "missing.pt"))
    assert r.returncode == 2 and "missing.pt" in r.stderr
    r = run_rss("frobnicate")
    assert r.returncode == 2 and "unknown command" in r.stderr


def test_cli_bench_convergence_smoke(tmp_path):
    path = tmp_path / "bench.json"
    r = run_rss("bench", "convergence", "--ce-steps", "2", "--train-size", "8", "--val-size", "4",
                "--shapes-size", "32", "--eval-every", "1", "--out", str(tmp_path / "bench"), "--json", str(path))
    assert r.returncode == 0, r.stderr
    rows = json.loads(path.read_text())["rows"]
    assert [row["method"] for row in rows] == ["ce", "pixel", "image_naive", "image_psd", "image_psd_psr", "image_best"]
    assert rows[-1]["steps"] == 8  # image_best: 4x the CE budget
    for row in rows:
        assert set(row) == {"method", "steps", "seconds", "sec_per_step", "val_miou", "ratio_to_ce"}
        assert 0.0 <= row["val_miou"] <= 1.0 and row["sec_per_step"] > 0
    assert rows[0]["ratio_to_ce"] == 1.0
    assert "ratio to CE" in r.stdout and (tmp_path / "bench" / "curves.png").is_file()


def test_cli_bench_convergence_on_scenes(tmp_path):
    path, out = tmp_path / "bench.json", tmp_path / "bench"
    r = run_rss("bench", "convergence", "--dataset", "scenes", "--scenes-size", "32", "--train-size", "8",
                "--val-size", "4", "--ce-steps", "2", "--rows", "pixel", "image_best", "--width", "4",
                "--eval-every", "1", "--out", str(out), "--json", str(path))
    assert r.returncode == 0, r.stderr
    payload = json.loads(path.read_text())
    assert [row["method"] for row in payload["rows"]] == ["ce", "pixel", "image_best"]
    assert all(set(row) == {"method", "steps", "seconds", "sec_per_step", "val_miou", "ratio_to_ce"}
               for row in payload["rows"])
    assert payload["args"]["dataset"] == "scenes" and payload["rows"][-1]["steps"] == 8
    final = json.loads((out / "image_best" / "final.json").read_text())
    assert len(final["per_class_iou"]) == 8 and final["class_names"][-1] == "stripes"
    assert (out / "curves.png").is_file()
