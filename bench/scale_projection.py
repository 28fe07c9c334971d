"""The rehearsal's projection to the paper's 1,239,372 pairs on one node of 8 GPUs, each figure
labelled measured, assumed or projected, and README's table made from it."""

from __future__ import annotations

from pathlib import Path

PAPER_PAIRS = 1_239_372
PAPER_TEST_IMAGES = 370_000
README_START = "<!-- bench_scale: start -->"
README_END = "<!-- bench_scale: end -->"


# -- projection ----------------------------------------------------------------------------------
def project(result: dict, args) -> list[dict]:
    """The paper's job on one node of ``--node-cores`` cores and 8 GPUs, each row labelled."""
    pairs, images = PAPER_PAIRS, 2 * PAPER_PAIRS
    data, loader, evaluation, writer = (
        result["data_path"],
        result["loader"],
        result["evaluation"],
        result["writer"],
    )
    prepare_core_h = images / data["prepare_images_per_s_per_core"] / 3600
    check_core_h = images / data["check_data_images_per_s_per_core"] / 3600
    gpus, cores = 8, args.node_cores
    sm_rate, both_rate = (loader[name]["pairs_per_s_per_core"] for name in ("sm", "sm_ffdm"))
    # per-core rates are per CPU second: see bench_data_path
    rows = [
        ("Pairs; test images", f"{pairs:,}; {PAPER_TEST_IMAGES:,}", "paper"),
        ("CPU cores per node", f"{cores}", "assumed"),
        (
            "GPU training rate, Stage I",
            f"{args.gpu_pairs_per_s:g} pairs/s per GPU",
            "assumed (no GPU measured here)",
        ),
        (
            "`prepare`, per core",
            f"{data['prepare_images_per_s_per_core']:.2f} images/s",
            "measured",
        ),
        (
            "`prepare`, whole data set",
            f"{prepare_core_h:,.0f} core-hours; "
            f"{prepare_core_h / cores:.1f} h wall on {cores} cores",
            "projected",
        ),
        (
            "`check-data`, per core",
            f"{data['check_data_images_per_s_per_core']:.2f} images/s",
            "measured",
        ),
        (
            "`check-data`, whole data set",
            f"{check_core_h:,.0f} core-hours; {check_core_h / cores:.1f} h wall on {cores} cores",
            "projected",
        ),
        (
            "Cache, per pair (1280x1024)",
            f"{data['cache_bytes_per_pair'] / 2**20:.2f} MiB",
            "measured",
        ),
        (
            "Cache, whole data set",
            f"{data['cache_bytes_per_pair'] * pairs / 2**40:.2f} TiB",
            "projected",
        ),
        ("Loader, per core (SM; SM + FFDM)", f"{sm_rate:.1f}; {both_rate:.1f} pairs/s", "measured"),
        (
            "Loader cores per GPU (SM; SM + FFDM)",
            f"{args.gpu_pairs_per_s / sm_rate:.1f}; {args.gpu_pairs_per_s / both_rate:.1f} "
            f"(x{gpus} GPUs: {gpus * args.gpu_pairs_per_s / both_rate:.0f} of {cores} cores)",
            "projected from the assumed GPU rate",
        ),
        (
            "Prediction writing, per core",
            f"{writer['rows_per_cpu_s']:,.0f} rows/s "
            f"({writer['max_detections']} per image kept of "
            f"{writer['detections_per_image_given']})",
            "measured",
        ),
        (
            "Writing the test split's predictions, one model, one process",
            f"{PAPER_TEST_IMAGES / writer['images_per_cpu_s']:.0f} s",
            "projected",
        ),
    ]
    new = evaluation["new"]
    today = evaluation["today_extrapolated"]
    rows += [
        (
            f"Evaluation, {new['images']:,} test images x {new['detections_per_image']} "
            "detections, two models, paired bootstrap (2,000)",
            f"{new['timings']['total_s']:.1f} s ({new['cpu_s']:.0f} s CPU, load average "
            f"{new['load_average'][0]:.1f}), {new['peak_rss_mib'] / 1024:.2f} GB peak RSS; "
            f"{new['file_mib_per_model']:.0f} MiB Parquet per model",
            "measured",
        ),
        (
            "Same with today's path (CSV, 100 per image, unpruned)",
            f"{today['total_s']:.0f} s, {today['peak_rss_mib'] / 1024:.1f} GB; "
            f"{today['csv_mib_per_model'] / 1024:.1f} GiB CSV per model",
            f"extrapolated ({today['basis']})",
        ),
    ]
    return [{"what": what, "figure": figure, "basis": basis} for what, figure, basis in rows]


def markdown(rows: list[dict]) -> str:
    lines = ["| What | Figure | Basis |", "|---|---|---|"]
    lines += [f"| {row['what']} | {row['figure']} | {row['basis']} |" for row in rows]
    return "\n".join(lines)


def update_readme(table: str, readme: Path) -> bool:
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{table}\n{README_END}{tail}")
    return True
