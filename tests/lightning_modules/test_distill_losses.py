"""Stage II's loss terms, each against a hand computation on small tensors; the student built
from a list of terms; the self-distillation control; the lesion/background diagnostics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_runs import run_stage

from lightning_modules import DistillStudent
from lightning_modules.distill_losses import (
    LossTerm,
    build_terms,
    cell_ranges,
    foreground_weights,
    lesion_boxes,
)
from lightning_modules.distillation import level_similarities, weighted_similarity

SIZE = (128, 128)


def _cos(u, v, eps=1e-8):
    u, v = np.asarray(u, float), np.asarray(v, float)
    return float(u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), eps))


def _random(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- where a box lies on a level ----------------------------------------------------------------
def test_cell_ranges_cover_the_cells_a_box_overlaps_and_at_least_its_centre():
    boxes = torch.tensor(
        [
            [10.0, 10.0, 20.0, 20.0],  # cells 1..2 at stride 8
            [3.0, 3.0, 4.0, 4.0],  # sub-cell: its centre's cell only
            [16.0, 0.0, 24.0, 8.0],  # exactly one cell
            [30.0, 30.0, 40.0, 40.0],
        ]
    )  # reaches past the 4x4 map: clipped
    cells = cell_ranges(boxes, 8, 4, 4).tolist()
    assert cells == [[1, 1, 2, 2], [0, 0, 0, 0], [0, 2, 0, 2], [3, 3, 3, 3]]
    assert cell_ranges(boxes[:2], 8, 4, 4, dilation=1).tolist() == [[0, 0, 3, 3], [0, 0, 1, 1]]
    # at a coarse level a small lesion still gets one cell
    assert cell_ranges(boxes[:1], 32, 2, 2).tolist() == [[0, 0, 0, 0]]


def test_foreground_weight_is_the_largest_one_over_box_area_covering_each_cell():
    boxes = [
        torch.tensor(
            [
                [0.0, 0.0, 16.0, 16.0],  # 2x2 cells: 1/4 each
                [8.0, 8.0, 12.0, 12.0],
            ]
        ),  # cell (1, 1) alone: 1
        torch.zeros(0, 4),
    ]
    weights = foreground_weights(boxes, 8, 3, 3)
    expected = np.zeros((2, 3, 3))
    expected[0, :2, :2] = 0.25
    expected[0, 1, 1] = 1.0
    np.testing.assert_array_equal(weights.numpy(), expected)


def test_lesion_boxes_reads_either_modality_or_both():
    batch = {
        "sm_boxes": [torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.zeros(0, 4)],
        "ffdm_boxes": [torch.tensor([[5.0, 6.0, 7.0, 8.0]]), torch.zeros(0, 4)],
    }
    assert lesion_boxes(batch, "both")[0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert lesion_boxes(batch, "ffdm")[0].tolist() == [[5, 6, 7, 8]]
    assert len(lesion_boxes(batch, "sm")[1]) == 0
    with pytest.raises(ValueError, match="ffdm boxes; the batch has none"):
        lesion_boxes({"sm_boxes": batch["sm_boxes"]}, "ffdm")


# -- each kind against a hand computation ------------------------------------------------------
def test_cosine_term_is_eq2_exactly_as_before():
    z = [_random((2, 4, 3, 5), 1), _random((2, 4, 2, 2), 2)]
    h = [_random((2, 4, 3, 5), 3), _random((2, 4, 2, 2), 4)]
    similarities = level_similarities(z, h)
    term = LossTerm({"kind": "cosine", "levels": [4], "level_weights": [2.0]}, [3, 4])
    value = term(z, h, None, [8, 16], similarities)
    assert torch.equal(value, -weighted_similarity(similarities[[1]], torch.tensor([2.0])))


def test_masked_cosine_by_hand():
    z, h = _random((1, 3, 2, 3), 5), _random((1, 3, 2, 3), 6)
    boxes = [torch.tensor([[0.0, 0.0, 8.0, 16.0]])]  # cells (0, 0) and (1, 0): 1/2 each
    term = LossTerm({"kind": "masked_cosine", "fg_weight": 3.0, "bg_weight": 0.5}, [3])
    value = term([z], [h], boxes, [8], level_similarities([z], [h]))
    one_minus = {(y, x): 1 - _cos(z[0, :, y, x], h[0, :, y, x]) for y in range(2) for x in range(3)}
    foreground = (0.5 * one_minus[0, 0] + 0.5 * one_minus[1, 0]) / 1.0
    background = np.mean([v for (y, x), v in one_minus.items() if x != 0])
    assert float(value) == pytest.approx(3.0 * foreground + 0.5 * background, rel=1e-12)
    # no lesion in the batch: the foreground part is 0, the background one is everything
    empty = term([z], [h], [torch.zeros(0, 4)], [8], None)
    assert float(empty) == pytest.approx(0.5 * np.mean(list(one_minus.values())), rel=1e-12)


def test_masked_cosine_counts_each_lesion_once_whatever_its_size():
    # a big lesion (4 cells) where z = h and a small one (1 cell) where z = -h: 1 - cos is 0
    # and 2, so with each lesion counted once the foreground part is (0 + 2) / 2 = 1.
    z = torch.ones(1, 2, 4, 4, dtype=torch.float64)
    h = z.clone()
    h[0, :, 3, 3] = -1.0
    boxes = [torch.tensor([[0.0, 0.0, 16.0, 16.0], [24.0, 24.0, 32.0, 32.0]])]
    term = LossTerm({"kind": "masked_cosine", "bg_weight": 0.0}, [3])
    assert float(term([z], [h], boxes, [8], None)) == pytest.approx(1.0, rel=1e-12)


def test_roi_cosine_by_hand_each_lesion_weighs_equally():
    # left half of the map: z = h = a; right half: z = b, h = c. A large box on the left and a
    # small one on the right pool constant features, so each lesion's 1 - cos is known.
    a, b, c = [1.0, 2.0, 0.5], [1.0, -1.0, 2.0], [0.3, 1.0, 1.0]
    z = torch.zeros(1, 3, 8, 16, dtype=torch.float64)
    h = torch.zeros_like(z)
    z[0, :, :, :8] = torch.tensor(a)[:, None, None]
    h[0, :, :, :8] = torch.tensor(a)[:, None, None]
    z[0, :, :, 8:] = torch.tensor(b)[:, None, None]
    h[0, :, :, 8:] = torch.tensor(c)[:, None, None]
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 48.0], [88.0, 16.0, 104.0, 32.0]])]  # stride 8
    term = LossTerm({"kind": "roi_cosine", "output_size": 2}, [3])
    value = term([z], [h], boxes, [8], None)
    assert float(value) == pytest.approx(((1 - 1.0) + (1 - _cos(b, c))) / 2, rel=1e-7)
    assert float(term([z], [h], [torch.zeros(0, 4)], [8], None)) == 0.0


def test_cwd_by_hand():
    z, h = _random((2, 3, 2, 2), 7), _random((2, 3, 2, 2), 8)
    tau = 2.0
    term = LossTerm({"kind": "cwd", "tau": tau}, [3])
    total = 0.0
    for n in range(2):
        for ch in range(3):
            s = z[n, ch].flatten().numpy() / tau
            t = h[n, ch].flatten().numpy() / tau
            p_t = np.exp(t) / np.exp(t).sum()
            p_s = np.exp(s) / np.exp(s).sum()
            total += float((p_t * (np.log(p_t) - np.log(p_s))).sum())
    expected = total * tau**2 / (2 * 3)
    assert float(term([z], [h], None, [8], None)) == pytest.approx(expected, rel=1e-10)


def test_pkd_by_hand_is_one_minus_pearson_per_channel():
    z, h = _random((2, 3, 2, 2), 9), _random((2, 3, 2, 2), 10)
    term = LossTerm({"kind": "pkd", "eps": 1e-12}, [3])
    errors = []
    pearson = []
    for ch in range(3):
        s = z[:, ch].flatten().numpy()
        t = h[:, ch].flatten().numpy()
        s_hat = (s - s.mean()) / s.std()
        t_hat = (t - t.mean()) / t.std()
        errors.append(((s_hat - t_hat) ** 2).mean())
        pearson.append(np.corrcoef(s, t)[0, 1])
    value = float(term([z], [h], None, [8], None))
    assert value == pytest.approx(np.mean(errors) / 2, rel=1e-10)
    assert value == pytest.approx(np.mean([1 - r for r in pearson]), rel=1e-10)


def test_levels_are_averaged_with_their_weights():
    z = [_random((1, 2, 2, 2), 11), _random((1, 2, 1, 1), 12)]
    h = [_random((1, 2, 2, 2), 13), _random((1, 2, 1, 1), 14)]
    term = LossTerm({"kind": "pkd", "level_weights": [1.0, 3.0]}, [3, 4])
    single = [
        float(LossTerm({"kind": "pkd", "levels": [level]}, [3, 4])(z, h, None, [8, 16], None))
        for level in (3, 4)
    ]
    assert float(term(z, h, None, [8, 16], None)) == pytest.approx(
        (single[0] + 3 * single[1]) / 4, rel=1e-12
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "mse"}, r"losses\[0\].kind must be one of"),
        (
            {"kind": "cwd", "temperature": 2},
            r"losses\[0\]: cwd takes \['tau'\] .* unknown "
            r"\['temperature'\]",
        ),
        ({"kind": "cwd", "tau": 0}, r"losses\[0\].tau: 0 is not allowed"),
        ({"kind": "cosine", "levels": [6]}, r"losses\[0\].levels \[6\]: this model's BiFPN levels"),
        ({"kind": "masked_cosine", "boxes": "ct"}, r"losses\[0\].boxes: 'ct' is not allowed"),
        ({"kind": "pkd", "weight": 0}, r"losses\[0\].weight must be > 0"),
    ],
)
def test_bad_terms_are_refused_naming_the_key(spec, message):
    with pytest.raises(ValueError, match=message):
        build_terms([spec], [3, 4, 5])


# -- the student with terms, the control, the diagnostics -----------------------------------------
def _batch(pairs=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batch = {"pair_id": [f"p{index}" for index in range(pairs)]}
    for modality in ("sm", "ffdm"):
        batch[modality] = torch.rand(pairs, 1, *SIZE, generator=generator)
        batch[f"{modality}_boxes"] = [torch.tensor([[20.0, 30.0, 50.0, 60.0]])] * pairs
        batch[f"{modality}_labels"] = [torch.tensor([0])] * pairs
    return batch


def test_student_loss_is_the_weighted_sum_of_its_terms(tiny_artifacts):
    losses = [
        {"kind": "masked_cosine", "weight": 2.0, "fg_weight": 4.0, "dilation": 1},
        {"kind": "cwd", "weight": 0.5, "tau": 4.0, "levels": [3]},
    ]
    student = DistillStudent(
        ffdm_teacher=str(tiny_artifacts["ffdm"] / "artifact"), image_size=SIZE, losses=losses
    ).eval()
    batch = _batch()
    with torch.no_grad():
        z = student.project(student.student_features(batch["sm"]))
        h = student.teacher_features(batch["ffdm"])
        boxes = lesion_boxes(batch, "both")
        masked = LossTerm(losses[0], [3, 4, 5])(z, h, boxes, [8, 16, 32], None)
        cwd = LossTerm(losses[1], [3, 4, 5])(z, h, None, [8, 16, 32], None)
        assert float(student(batch)) == pytest.approx(float(2.0 * masked + 0.5 * cwd), rel=1e-6)
    assert student.artifact_spec()["losses"][1] == {
        "kind": "cwd",
        "weight": 0.5,
        "levels": [3],
        "level_weights": [1.0],
        "tau": 4.0,
    }
    with pytest.raises(ValueError, match="with `losses`, give them inside each term"):
        DistillStudent(
            ffdm_teacher=str(tiny_artifacts["ffdm"] / "artifact"),
            image_size=SIZE,
            losses=losses,
            levels=[3],
        )


def test_self_distillation_control_learns_a_from_the_same_sm(tiny_artifacts):
    sm = str(tiny_artifacts["sm"] / "artifact")
    student = DistillStudent(sm_teacher=sm, image_size=SIZE).eval()
    assert student.teacher_modality == "sm" and "sm_teacher" in student.inputs
    assert student.artifact_spec()["teacher_modality"] == "sm"
    batch = _batch()
    del batch["ffdm"]  # the control never reads an FFDM
    with torch.no_grad():
        z = student.project(student.student_features(batch["sm"]))
        h = student.teacher_features(batch["sm"])
        expected = -level_similarities(z, h).mean()
        assert float(student(batch)) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="exactly one teacher"):
        DistillStudent(
            ffdm_teacher=str(tiny_artifacts["ffdm"] / "artifact"), sm_teacher=sm, image_size=SIZE
        )
    with pytest.raises(ValueError, match="expected a stage-1 TeacherDetector on sm"):
        DistillStudent(sm_teacher=str(tiny_artifacts["ffdm"] / "artifact"), image_size=SIZE)


def test_validation_logs_similarity_at_lesions_and_background_per_level(
    tiny_artifacts, tiny_phantom, tmp_path
):
    run = tmp_path / "stage2"
    run_stage(
        "demo/stage2_distill.yaml",
        tiny_phantom,
        run,
        "--trainer.max_epochs",
        "1",
        "--data.init_args.samples_per_epoch",
        "8",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.logger",
        "false",
        "--model.init_args.ffdm_teacher",
        str(tiny_artifacts["ffdm"] / "artifact"),
        "--model.init_args.init_from",
        str(tiny_artifacts["ffdm"] / "artifact"),
        "--model.init_args.losses",
        '[{"kind": "roi_cosine"}, {"kind": "cosine"}]',
    )
    import pandas as pd

    history = pd.read_csv(run / "history.csv").dropna(subset=["val_cosine"]).iloc[-1]
    for where in ("lesion", "background"):
        values = [history[f"val_cosine_{where}_p{level}"] for level in (3, 4, 5)]
        assert all(-1.0 <= value <= 1.0 for value in values)
        assert history[f"val_cosine_{where}"] == pytest.approx(np.mean(values), rel=1e-5)
    # the two are different averages of the same map: they differ on real features
    assert not math.isclose(history["val_cosine_lesion_p3"], history["val_cosine_background_p3"])
