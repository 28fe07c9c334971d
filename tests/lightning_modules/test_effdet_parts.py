"""The EfficientDet parts: same loss as effdet's own bench, Eq. 1, weights, head shapes."""

import math

import pytest
import torch
from effdet import EfficientDet, create_model_from_config, get_efficientdet_config
from effdet.config import set_config_writeable
from safetensors.torch import save_file

from lightning_modules import TeacherDetector
from lightning_modules.effdet_parts import (
    DetectionHead,
    FeatureExtractor,
    build_config,
    concat_features,
    focal_loss,
)

SIZE = (256, 256)


def _batch(size=SIZE):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 1, *size, generator=generator)
    boxes = [
        torch.tensor([[30.0, 40.0, 90.0, 120.0]]),
        torch.tensor([[10.0, 10.0, 50.0, 40.0], [120.0, 100.0, 200.0, 230.0]]),
    ]
    labels = [torch.tensor([0]), torch.tensor([0, 0])]
    return {"sm": images, "sm_boxes": boxes, "sm_labels": labels, "pair_id": ["p0", "p1"]}


def test_training_loss_equals_effdet_detbenchtrain():
    alpha, gamma = 0.9, 2.5
    teacher = TeacherDetector(
        modality="sm",
        architecture="efficientdet_d0",
        image_size=SIZE,
        num_classes=1,
        focal_alpha=alpha,
        focal_gamma=gamma,
    ).eval()

    # effdet's own bench, configured independently of build_config.
    config = get_efficientdet_config("efficientdet_d0")
    set_config_writeable(config)
    config.num_classes, config.image_size = 1, SIZE
    config.alpha, config.gamma = alpha, gamma
    bench = create_model_from_config(
        config, bench_task="train", bench_labeler=True, pretrained_backbone=False
    ).eval()
    # Strict loading checks that the parts keep effdet's state-dict names.
    bench.model.load_state_dict(
        {**teacher.extractor.state_dict(), **teacher.head.state_dict()}, strict=True
    )

    batch = _batch()
    target = {
        "bbox": torch.full((2, 2, 4), -1.0),
        "cls": torch.full((2, 2), -1.0),
        "img_scale": torch.ones(2),
        "img_size": torch.tensor([SIZE, SIZE], dtype=torch.float32),
    }
    for index, (boxes, labels) in enumerate(zip(batch["sm_boxes"], batch["sm_labels"])):
        target["bbox"][index, : len(boxes)] = boxes[:, [1, 0, 3, 2]]
        target["cls"][index, : len(labels)] = labels.float() + 1

    with torch.no_grad():
        ours = teacher.detection_loss(batch)
        theirs = bench(teacher.extractor.normalize(batch["sm"]), target)
    for name in ("loss", "class_loss", "box_loss"):
        assert ours[name].item() == pytest.approx(theirs[name].item(), rel=1e-5), name
    assert ours["loss"].item() > 0


def test_focal_loss_matches_equation_1_by_hand():
    alpha, gamma = 0.9, 2.5
    logits = torch.tensor([2.0, -1.0, 0.3, -0.7], dtype=torch.float64)
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    values = focal_loss(logits, targets, alpha=alpha, gamma=gamma)
    expected = []
    for logit, target in zip(logits.tolist(), targets.tolist()):
        p = 1.0 / (1.0 + math.exp(-logit))
        if target == 1.0:  # Eq. 1
            expected.append(-alpha * (1.0 - p) ** gamma * math.log(p))
        else:
            expected.append(-(1.0 - alpha) * p**gamma * math.log(1.0 - p))
    assert values.tolist() == pytest.approx(expected, rel=1e-9)
    # The values the module trains with are the ones asked for.
    teacher = TeacherDetector(
        architecture="efficientdet_d0", image_size=SIZE, focal_alpha=alpha, focal_gamma=gamma
    )
    assert (teacher.criterion.focal_alpha, teacher.criterion.focal_gamma) == (alpha, gamma)


def _coco_model():
    torch.manual_seed(1)
    return EfficientDet(get_efficientdet_config("efficientdet_d0"), pretrained_backbone=False)


@pytest.mark.parametrize("file_format", ["pth", "lightning", "safetensors"])
def test_coco_checkpoint_loads_and_resets_class_head(tmp_path, file_format):
    reference = _coco_model()
    state = reference.state_dict()
    assert state["class_net.predict.conv_pw.weight"].shape[0] == 90 * 9
    path = tmp_path / f"coco.{'safetensors' if file_format == 'safetensors' else 'pth'}"
    if file_format == "pth":
        torch.save(state, path)
    elif file_format == "lightning":
        torch.save({"state_dict": {f"model.{key}": value for key, value in state.items()}}, path)
    else:
        save_file({key: value.contiguous() for key, value in state.items()}, str(path))

    teacher = TeacherDetector(
        architecture="efficientdet_d0", image_size=SIZE, num_classes=1, pretrained=str(path)
    )
    loaded = {**teacher.extractor.state_dict(), **teacher.head.state_dict()}
    for key, value in state.items():
        if key.startswith(("backbone.", "fpn.", "box_net.")):
            assert torch.equal(loaded[key], value), key
    # The class head is effdet's fresh one for one class, with the class-prior bias.
    assert loaded["class_net.predict.conv_pw.weight"].shape[0] == 1 * 9
    assert not torch.equal(
        loaded["class_net.conv_rep.0.conv_pw.weight"], state["class_net.conv_rep.0.conv_pw.weight"]
    )
    prior = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(loaded["class_net.predict.conv_pw.bias"], torch.full((9,), prior))


def test_timm_backbone_file_loads_into_backbone(tmp_path):
    import timm

    torch.manual_seed(2)
    classifier = timm.create_model("efficientnet_b0", pretrained=False)
    path = tmp_path / "efficientnet_b0.pth"
    torch.save(classifier.state_dict(), path)
    teacher = TeacherDetector(architecture="efficientdet_d0", image_size=SIZE, pretrained=str(path))
    backbone = teacher.extractor.backbone.state_dict()
    assert backbone, "backbone has weights"
    for key, value in backbone.items():
        assert torch.equal(value, classifier.state_dict()[key]), key


def test_weights_of_another_architecture_are_refused(tmp_path, tiny_architecture):
    path = tmp_path / "coco.pth"
    torch.save(_coco_model().state_dict(), path)
    with pytest.raises(ValueError, match="does not fit this model's backbone"):
        TeacherDetector(
            architecture="efficientdet_d0",
            image_size=(128, 128),
            architecture_overrides=tiny_architecture,
            pretrained=str(path),
        )


def test_missing_weight_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "coco.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        TeacherDetector(architecture="efficientdet_d0", image_size=SIZE, pretrained=str(missing))


def test_two_extractors_concatenated_feed_a_double_width_head(tiny_architecture):
    config = build_config("efficientdet_d0", (128, 128), 1, tiny_architecture)
    sm_extractor, ffdm_extractor = FeatureExtractor(config), FeatureExtractor(config)
    single, double = DetectionHead(config), DetectionHead(config, in_multiplier=2)
    images = torch.rand(2, 1, 128, 128)
    h_sm, h_ffdm = sm_extractor(images), ffdm_extractor(images)
    assert [level.shape[1] for level in h_sm] == [32, 32, 32]
    h_fused = concat_features(h_sm, h_ffdm)
    assert [level.shape[1] for level in h_fused] == [64, 64, 64]
    class_1, box_1 = single(h_sm)
    class_2, box_2 = double(h_fused)
    assert [t.shape for t in class_2] == [t.shape for t in class_1]
    assert [t.shape for t in box_2] == [t.shape for t in box_1]
    with pytest.raises(ValueError, match="this head takes 64"):
        double(h_sm)


def test_effdet_architecture_has_five_bifpn_levels():
    config = build_config("tf_efficientdet_d0", SIZE, 1)
    features = FeatureExtractor(config).eval()(torch.rand(1, 3, *SIZE))
    assert [tuple(level.shape[-2:]) for level in features] == [
        (32, 32),
        (16, 16),
        (8, 8),
        (4, 4),
        (2, 2),
    ]  # P3..P7


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="divisible by 2\\*\\*max_level = 128"):
        build_config("tf_efficientdet_d0", (300, 256), 1)
    with pytest.raises(ValueError, match="unknown effdet config keys.*fpn_chanels"):
        build_config("tf_efficientdet_d0", SIZE, 1, {"fpn_chanels": 32})


def test_decoded_detections_are_xyxy_inside_the_input(tiny_architecture):
    teacher = TeacherDetector(
        architecture="efficientdet_d0",
        image_size=(128, 128),
        architecture_overrides=tiny_architecture,
    ).eval()
    batch = _batch((128, 128))
    detections = teacher.detections(batch)
    assert [d["pair_id"] for d in detections] == ["p0", "p1"]
    for image in detections:
        boxes, scores = image["boxes"], image["scores"]
        assert len(boxes) == len(scores) == len(image["labels"]) > 0
        assert torch.all(boxes[:, 2] > boxes[:, 0]) and torch.all(boxes[:, 3] > boxes[:, 1])
        assert torch.all(scores[:-1] >= scores[1:])  # highest first
        assert set(image["labels"].tolist()) == {0}
