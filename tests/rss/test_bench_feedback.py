"""`rss bench feedback` and the simulated raters it shares with `rss rater-sim`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from learner.rewards import Episodes
from rss.bench.feedback import CONFIGS, FeedbackArgs, SimulatedRaters, best_within, feedback, table
from rss.raters import Imperfection, brush, choose_best, name_classes, prefer, verify
from rss_core.answers import CORRECT, UNMARKED, WRONG
from rss_core.data import build_dataset
from rss_core.grid import ActionGrid


def test_a_brush_misses_what_is_thinner_than_its_stroke_and_spills_over_edges() -> None:
    correct = torch.ones(12, 12, dtype=torch.bool)
    correct[1, 1] = False  # one stray wrong pixel: thinner than a 3-pixel stroke
    correct[5:10, 5:10] = False  # a 5 x 5 wrong region
    valid = torch.ones(12, 12, dtype=torch.bool)
    valid[0, :] = False  # ignored row: never painted
    painted = brush(correct, valid, Imperfection(brush_width=3, brush_spill=1))
    assert painted[1, 1] == CORRECT  # missed
    assert (painted[5:10, 5:10] == WRONG).all()  # found
    assert (painted[4:11, 4:11] == WRONG).all() and painted[3, 3] == CORRECT  # spilled one pixel, no more
    assert (painted[0] == UNMARKED).all()
    exact = brush(correct, valid, Imperfection(brush_width=1, brush_spill=0))
    assert torch.equal(exact[1:] == WRONG, ~correct[1:])  # a perfect brush paints exactly the wrong pixels


def test_a_class_brush_paints_each_stroke_in_the_class_that_belongs_there() -> None:
    labels = torch.zeros(12, 12, dtype=torch.long)
    labels[5:10, 5:7] = 2  # a wrong region of two true classes, side by side
    labels[5:10, 7:10] = 4
    labels[0, 0] = 255  # ignored: never painted, never named
    correct = labels == 0  # the mask shown: all background
    valid = labels != 255
    noise = Imperfection(brush_width=3, brush_spill=1)
    painted = brush(correct, valid, noise)
    named = name_classes(painted, correct, labels, noise)
    assert (named[5:10, 5:7] == 2).all() and (named[5:10, 7:10] == 4).all()  # the true class where wrong
    assert named[4, 5] == 2 and named[10, 9] == 4 and named[4, 7] == 4  # spill: the class it spilled from
    assert ((named == 255) == (painted != WRONG)).all()  # a class wherever painted, nowhere else
    assert named[0, 0] == 255


def test_a_preference_is_wrong_at_the_flip_rate_and_a_tie_stays() -> None:
    rng = np.random.default_rng(0)
    answers = [prefer(0.8, 0.2, Imperfection(flip=0.25), rng) for _ in range(4000)]
    assert answers.count("b") / len(answers) == pytest.approx(0.25, abs=0.03)
    assert prefer(0.5, 0.5, Imperfection(flip=1.0), rng) == "tie"
    with pytest.raises(ValueError, match="--brush-width must be odd"):
        Imperfection(brush_width=2)


def test_simulated_raters_give_the_services_rewards_for_their_answers() -> None:
    dataset = build_dataset("shapes", "train", shapes_size=32, shapes_length=4)
    labels = dataset.batch(torch.arange(2))[1]
    wrong = (labels + 1) % dataset.num_classes
    actions = torch.stack([labels, wrong], 1)  # (B, K=2): sample 0 right, sample 1 wrong everywhere
    episodes = Episodes(torch.arange(2), actions, ActionGrid(0), (32, 32), "image")
    raters = SimulatedRaters(dataset, torch.device("cpu"), "miou", "pairwise", Imperfection(flip=0.0), seed=0)
    assert raters.score(episodes).image.tolist() == [[1.0, 0.0], [1.0, 0.0]]  # PREFERENCE["a"] for each pair
    assert raters.answers == 2
    scores = SimulatedRaters(dataset, torch.device("cpu"), "miou", "score", Imperfection(jitter=0.0), seed=0)
    assert scores.score(episodes).image.tolist() == [[1.0, 0.0], [1.0, 0.0]] and scores.answers == 4
    brushes = SimulatedRaters(dataset, torch.device("cpu"), "miou", "brush", Imperfection(1.0, 1.0, 1, 0), seed=0)
    pixel = brushes.score(Episodes(torch.arange(2), actions, ActionGrid(0), (32, 32), "pixel"))
    assert (pixel.pixel[:, 0] == 1).all() and (pixel.pixel[:, 1] == -1).all() and brushes.answers == 4
    three = torch.stack([wrong, labels, wrong], 1)  # best of 3: the right mask in the middle
    best = SimulatedRaters(dataset, torch.device("cpu"), "miou", "best", Imperfection(flip=0.0), seed=0)
    chosen = best.score(Episodes(torch.arange(2), three, ActionGrid(0), (32, 32), "image"))
    assert chosen.image.tolist() == [[0.0, 1.0, 0.0]] * 2 and best.answers == 2  # one answer an image


def test_a_best_of_n_choice_is_wrong_at_the_flip_rate_and_then_names_another_mask() -> None:
    rng = np.random.default_rng(0)
    picks = [choose_best([0.1, 0.9, 0.3, 0.2], Imperfection(flip=0.3), rng) for _ in range(4000)]
    assert picks.count(1) / len(picks) == pytest.approx(0.7, abs=0.03)
    assert {0, 2, 3} <= set(picks)  # a wrong pick is any of the others


def test_point_answers_are_wrong_at_their_error_rate_and_only_where_asked() -> None:
    correct = torch.ones(20000, dtype=torch.bool)
    said = verify(correct, Imperfection(point_error=0.2), torch.Generator().manual_seed(0))
    assert float((~said).float().mean()) == pytest.approx(0.2, abs=0.015)
    dataset = build_dataset("shapes", "train", shapes_size=32, shapes_length=4)
    labels = dataset.batch(torch.arange(2))[1]
    actions = torch.stack([labels], 1)  # (B, K=1): right everywhere
    query = torch.zeros(2, 32, 32, dtype=torch.bool)
    query[0, 3, 4] = query[1, 10, 10] = query[1, 0, 0] = True
    raters = SimulatedRaters(dataset, torch.device("cpu"), "miou", "points", Imperfection(point_error=0.0), seed=0)
    rewards = raters.score(Episodes(torch.arange(2), actions, ActionGrid(0), (32, 32), "pixel", query))
    assert raters.answers == 3 and torch.equal(rewards.valid, query)  # three questions, three answers
    assert (rewards.pixel[:, 0][query] == 1).all() and (rewards.pixel[:, 0][~query] == 0).all()
    wrong = SimulatedRaters(dataset, torch.device("cpu"), "miou", "points", Imperfection(point_error=0.0), seed=0)
    no = wrong.score(Episodes(torch.arange(2), (actions + 1) % 4, ActionGrid(0), (32, 32), "pixel", query))
    assert (no.pixel[:, 0][query] == -1).all()  # "no": the asked class is ruled out there


def test_bench_feedback_reports_every_config_against_ce_at_equal_hours(tmp_path) -> None:
    """A tiny budget: the report's numbers follow from the cost table, and every config ran."""
    args = FeedbackArgs(shapes_size=32, train_size=64, val_size=16, batch_size=4, width=4, threads=1,
                        budgets_h=(0.05, 0.1), seconds_label=30.0, warm_images=2, ce_steps=4, eval_points=2,
                        out=str(tmp_path / "fb"), json=str(tmp_path / "fb.json"), jobs=2)  # runs in 2 processes
    report = feedback(args)
    assert json.loads((tmp_path / "fb.json").read_text()) == report
    ce = report["ce_on_labels"]  # the images 0.05 h and 0.1 h of labelling buy at 30 s an image
    assert {h: v["images"] for h, v in ce.items()} == {"0.05": 6, "0.1": 12}
    assert all(0 <= v["val_miou"] <= 1 for v in ce.values())
    assert [c["name"] for c in report["configs"]] == list(CONFIGS)
    for config in report["configs"]:
        spec, cost = CONFIGS[config["name"]], args.seconds(config["kind"])
        warm_h = 2 * 30.0 / 3600 if spec.warm_start else 0.0
        assert config["points"], config["name"]
        for point in config["points"]:
            assert point["answers"] % (4 * spec.answers_per_image(args.points_per_image)) == 0
            assert point["hours"] == pytest.approx(warm_h + point["answers"] * cost / 3600, abs=1e-4)
            assert point["hours"] <= 0.1 + 1e-9 and 0 <= point["val_miou"] <= 1
        assert best_within(config["points"], 0.1) == max(p["val_miou"] for p in config["points"])
    assert (tmp_path / "fb" / "feedback.png").stat().st_size > 0
    assert table(report).count("\n") == 2 + len(CONFIGS)
    # --report-only rebuilds the same report from the runs on disk, training nothing; a run never made is refused
    again = feedback(dataclasses.replace(args, report_only=True, jobs=1, json=None))
    assert again["configs"] == report["configs"] and again["ce_on_labels"] == report["ce_on_labels"]
    # --reuse-ce: a later bench adds configurations beside these, keeping the finished CE runs untouched
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "fb").glob("ce_*/checkpoint.pt")}
    added = feedback(dataclasses.replace(args, reuse_ce=True, configs=("score",), jobs=1, json=None))
    assert added["ce_on_labels"] == report["ce_on_labels"] and [c["name"] for c in added["configs"]] == ["score"]
    assert stamps and {p: p.stat().st_mtime_ns for p in stamps} == stamps
    with pytest.raises(ValueError, match="no evaluations in .*elsewhere"):
        feedback(dataclasses.replace(args, report_only=True, out=str(tmp_path / "elsewhere")))
    with pytest.raises(ValueError, match="--configs: unknown"):
        feedback(FeedbackArgs(configs=("shouting",), out=str(tmp_path / "bad")))
