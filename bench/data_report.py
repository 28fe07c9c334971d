"""Part 3 of the data benchmark and its printout: the CPU cores that keep one GPU fed at an
assumed GPU rate, the decode path's acceptance, and the summary printed after a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_proposals import PROPOSALS

ASSUMPTION = (
    "assumed, not measured here: the Stage I training rate of EfficientDet-D0 at "
    "1280 x 1024 with bf16 on one H100/H200-class GPU"
)


# -- 3. conclusions ------------------------------------------------------------------------------
def conclusions(decode, loader, args) -> dict[str, Any]:
    gpu = args.gpu_pairs_per_s
    files = decode["files"]
    stage1 = loader["stage1_one_modality"]
    rates = {int(w): value["median"] for w, value in stage1["pairs_per_s"].items()}
    per_worker = {w: rates[w] / max(1, w) for w in rates}
    # one worker process is one core; else the in-process loader (0 workers)
    basis = 1 if 1 in rates else min(rates)
    cached = {
        "pairs_per_s_per_core": per_worker[basis],
        "basis_num_workers": basis,
        "cores_per_gpu": gpu / per_worker[basis],
        "cores_per_gpu_by_num_workers": {str(w): gpu / per_worker[w] for w in rates},
        "note": "loader worker cores only; the training process itself needs one more",
    }
    two = loader["two_modalities"]["pairs_per_s"]
    two_rate = two[str(basis)]["median"] / max(1, basis)
    cached["two_modalities_cores_per_gpu_at_same_rate"] = gpu / two_rate
    # without a cache: each image's load_image instead of its cache read, the rest unchanged
    steps = stage1["steps_s"]
    cached_pair = 1.0 / rates[min(rates)]
    rest = max(0.0, cached_pair - steps["cache_read_per_image"]["mean"])
    decode_path = {}
    for name, result in files.items():
        seconds = result["ours_s"]["median"] + rest
        decode_path[f"stage1_{name}"] = {"s_per_pair": seconds, "cores_per_gpu": gpu * seconds}
    two_steps = loader["two_modalities"]["steps_s"]
    two_rest = max(
        0.0, 1.0 / two[str(min(rates))]["median"] - 2 * two_steps["cache_read_per_image"]["mean"]
    )
    if "sm_uncompressed" in files:
        for name in ("ffdm_uncompressed", "ffdm_jpeg2000", "ffdm_jpeg_lossless"):
            if name in files:
                seconds = (
                    files["sm_uncompressed"]["ours_s"]["median"]
                    + files[name]["ours_s"]["median"]
                    + two_rest
                )
                decode_path[f"two_modalities_sm_and_{name}"] = {
                    "s_per_pair": seconds,
                    "cores_per_gpu": gpu * seconds,
                }
    uncompressed = files.get("ffdm_uncompressed")
    target = {}
    if uncompressed is not None:
        ratio = uncompressed["ratio_ours_to_floor"]["of_medians"]
        steps_s = uncompressed["steps_s"]
        costly = sorted(
            (
                (name, value["median"])
                for name, value in steps_s.items()
                if not name.startswith("of_which") and name != "cache_write"
            ),
            key=lambda item: -item[1],
        )
        target = {
            "uncompressed_ffdm_ratio": ratio,
            "target_ratio": 2.0,
            "aim_ratio": 1.5,
            "meets_target": ratio <= 2.0,
            "floor_s": uncompressed["floor_s"]["median"],
            "ours_s": uncompressed["ours_s"]["median"],
            "steps_by_cost_s": dict(costly),
            "inside_steps_s": {
                name: value["median"]
                for name, value in steps_s.items()
                if name.startswith("of_which")
            },
        }
        proposed = uncompressed.get("proposed")
        if proposed:
            target["proposed_ratios"] = {
                name: proposed[name]["ratio_to_floor"] for name in PROPOSALS
            }
    return {
        "gpu_pairs_per_s": gpu,
        "gpu_rate_is": ASSUMPTION,
        "cached": cached,
        "decode_path_no_cache": decode_path,
        "decode_path_formula": "cores = gpu pairs/s x (load_image per image + the cached "
        "loader's per-pair time less its cache read)",
        "acceptance": target,
    }


# -- summary -------------------------------------------------------------------------------------
def ms(value: float) -> str:
    return f"{value * 1000:.0f}" if value >= 0.01 else f"{value * 1000:.1f}"


def print_summary(result, path: Path) -> None:
    decode, loader, found = result["decode"], result["loader"], result["conclusions"]
    print(
        "Decode + preprocessing per image, one core (median ms; ours = load_image; "
        "ratio = ours / floor):"
    )
    print(f"  {'file':32s} {'floor':>7s} {'ours':>7s} {'ratio':>6s} {'prepare':>8s}  MiB")
    for name, item in decode["files"].items():
        print(
            f"  {name:32s} {ms(item['floor_s']['median']):>7s} "
            f"{ms(item['ours_s']['median']):>7s} "
            f"{item['ratio_ours_to_floor']['of_medians']:>5.1f}x "
            f"{ms(item['prepare_one_s']['median']):>8s}  {item['file_mib']:.1f}"
        )
    for name, item in decode["files"].items():
        parts = ", ".join(
            f"{step} {ms(value['median'])}" for step, value in item["steps_s"].items()
        )
        print(f"  steps of {name} (ms): {parts}")
    uncompressed = decode["files"].get("ffdm_uncompressed", {})
    proposed = uncompressed.get("proposed", {})
    if proposed:
        print(
            f"  local experiment on ffdm_uncompressed, its own pass: floor "
            f"{ms(proposed['floor_s']['median'])} ms, ours {ms(proposed['ours_s']['median'])}"
            " ms"
        )
    for name in PROPOSALS if proposed else ():
        item = proposed[name]
        same = (
            "identical output"
            if item["identical_to_load_image"]
            else (
                f"mean |diff| {item['mean_abs_difference']:.1e} (max "
                f"{item['max_abs_difference']:.2f}, "
                f"{100 * item['share_of_pixels_off_by_over_0_01']:.1f}% of pixels off by > 0.01), "
                f"crop box moved {item['crop_box_change_px']} px; on its own crop box "
                + (
                    "identical"
                    if item["identical_to_load_image_steps_on_its_geometry"]
                    else f"max |diff| {item['max_abs_difference_on_its_geometry']:.2g}"
                )
            )
        )
        print(
            f"  proposed {name} (local experiment): {ms(item['s']['median'])} ms, "
            f"{item['ratio_to_floor']:.1f}x floor, {item['speed_up_vs_ours']:.1f}x faster "
            f"than ours, {same}"
        )
    print(
        f"Cached loader at {result['settings']['image_size']}, batch "
        f"{loader['batch_size']}, training augmentation (pairs/s, median of "
        f"{loader['repeats']}):"
    )
    for config in ("stage1_one_modality", "two_modalities"):
        item = loader[config]
        rates = ", ".join(
            f"num_workers={w}: {value['median']:.1f}" for w, value in item["pairs_per_s"].items()
        )
        steps = item["steps_s"]
        print(
            f"  {config} {item['modalities']}: {rates}; in process, mean ms: cache read "
            f"{ms(steps['cache_read_per_image']['mean'])} per image (zlib inflate "
            f"{ms(steps['cache_inflate_per_image']['mean'])}), augment "
            f"{ms(steps['augment_per_pair']['mean'])} per pair, getitem "
            f"{ms(steps['getitem_per_pair']['mean'])} per pair, collate "
            f"{ms(steps['collate_per_pair']['mean'])} per pair"
        )
    cached = found["cached"]
    print(f"Cores per GPU at {found['gpu_pairs_per_s']:g} pairs/s ({found['gpu_rate_is']}):")
    print(
        f"  cached loader: {cached['cores_per_gpu']:.1f} worker cores "
        f"({cached['pairs_per_s_per_core']:.1f} pairs/s per core, "
        f"{cached['basis_num_workers']} worker), two modalities "
        f"{cached['two_modalities_cores_per_gpu_at_same_rate']:.1f}; plus the training "
        "process"
    )
    for name, item in found["decode_path_no_cache"].items():
        print(
            f"  no cache, {name}: {item['cores_per_gpu']:.1f} cores "
            f"({ms(item['s_per_pair'])} ms per pair)"
        )
    target = found["acceptance"]
    if target:
        verdict = "meets" if target["meets_target"] else "misses"
        print(
            f"Acceptance: uncompressed FFDM {target['uncompressed_ffdm_ratio']:.1f}x the "
            f"pixel_array floor: {verdict} the 2x target"
        )
    print(f"wrote {path} ({result['wall_s']:.0f} s)")
