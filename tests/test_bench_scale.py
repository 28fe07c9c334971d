"""``bench/bench_scale.py --quick``: the rehearsal of the paper's scale runs end to end on small
sizes, and its result says of every figure whether it was measured, assumed or projected."""

from __future__ import annotations

import json
import subprocess
import sys

from repo_paths import REPO_ROOT


def test_the_quick_rehearsal_writes_every_figure_with_its_basis(tmp_path):
    out = tmp_path / "scale.json"
    done = subprocess.run(
        [sys.executable, "bench/bench_scale.py", "--quick", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    evaluation = result["evaluation"]
    for today in evaluation["today"].values():  # today's path and the new one agree
        assert today["new_path_on_the_same_detections"]["numbers_equal"]
    new = evaluation["new"]
    assert new["rows_in_files_and_read"]["a"][0] == 2000 * 32  # every image at the cap
    assert 0 < new["rows_in_files_and_read"]["a"][1] < 2000 * 32  # pruned before matching
    assert result["writer"]["rows"] == 300 * 32 and result["writer"]["images_capped"] == 300
    assert result["data_path"]["prepare_exit"] == 0 and result["data_path"]["check_data_exit"] == 0
    bases = {row["basis"].split(" ")[0] for row in result["projection"]}
    assert bases == {"paper", "assumed", "measured", "projected", "extrapolated"}
    assert any(
        "GPU" in row["what"] and row["basis"].startswith("assumed") for row in result["projection"]
    )
    assert "| What | Figure | Basis |" in done.stdout
