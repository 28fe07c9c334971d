"""The data check of `PairedMammoDataModule` (``datamodules/paired.py``), as a mixin of it:
which pairs of a stage's splits `setup_check` finds bad, run once per manifest (rank 0, its
report broadcast) and kept in ``check_dir`` for the same data."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from common.io import sha256_file, write_atomically
from common.problems import Problem, format_problems
from datamodules.cache import CACHE_INFO
from datamodules.manifest import resolve_table_paths
from datamodules.preflight import CheckReport, CheckSettings, DataCheckError, setup_check

# The data module's own logger: the check logs under ``datamodules.paired``, as it always has.
logger = logging.getLogger("datamodules.paired")


class DataCheckMixin:
    """`PairedMammoDataModule`'s data check: ``_check`` is what its ``setup`` and ``dataset``
    call. It reads the data module's settings (``manifest``, ``lesions``, ``cache_dir``, ...),
    tables (``_manifest``, ``_lesions``, ``summary``), ``_checked``, ``_report``, ``trainer``
    and ``workers``."""

    def check_settings(self) -> CheckSettings:
        """How this data module reads its images and boxes, for `setup_check`."""
        return CheckSettings(
            manifest=self.manifest,
            lesions=self.lesions,
            cache_dir=self.cache_dir,
            image_size=self.image_size,
            window=self.window,
            margin=self.margin,
            modalities=self.modalities,
            seed=self.seed,
            split_fractions=self.split_fractions,
            pathology_classes=self.pathology_classes,
        )

    def _check(self, splits) -> None:
        """The check's problems of the splits not checked yet (one `setup_check` of the whole
        manifest: `_check_report`): raise `DataCheckError` or leave the bad pairs out
        (``on_bad_sample``); log the warnings."""
        splits = [split for split in splits if split not in self._checked]
        if not splits:
            return
        manifest_file = resolve_table_paths(self.manifest, self.lesions)[0]
        report = self._check_report()
        pair_ids = set(self._manifest.loc[self._manifest["split"].isin(splits), "pair_id"])
        problems, warned = (
            [problem for problem in found if problem.pair_id is None or problem.pair_id in pair_ids]
            for found in (report.problems, report.warnings)
        )
        self._checked.update(splits)
        if warned and (self.trainer is None or self.trainer.is_global_zero):
            logger.warning(
                "%s",
                format_problems(
                    warned,
                    f"the data of {manifest_file}: warnings (it trains, but not quite as "
                    "the tables say)",
                    limit=10,
                    more="`python cli.py check-data --json FILE` lists them all",
                ),
            )
        if not problems:
            return
        if self.on_bad_sample == "error":
            raise DataCheckError(
                problems,
                subject=f"the data of {manifest_file}",
                hint="Fix or remove these pairs; on_bad_sample: skip leaves them out instead. "
                "`python cli.py check-data` checks every file in full.",
            )
        if any(problem.pair_id is None for problem in problems):
            raise DataCheckError(problems, subject=f"the data of {manifest_file}")
        bad: dict[str, str] = {}
        for problem in problems:
            bad.setdefault(problem.pair_id, str(problem))
        for pair_id, reason in bad.items():
            logger.warning("on_bad_sample=skip: skipping pair %s: %s", pair_id, reason)
        self.summary.skipped.update(bad)
        keep = ~self._manifest["pair_id"].isin(set(bad))
        self._manifest = self._manifest[keep].reset_index(drop=True)
        self._lesions = self._lesions[~self._lesions["pair_id"].isin(set(bad))].reset_index(
            drop=True
        )

    def _check_report(self) -> CheckReport:
        """`setup_check` of every pair of the manifest, once: rank 0 runs it (or reads the
        report kept for the same data) and broadcasts it, so every rank trains on the same
        pairs whatever a file system shows one rank."""
        if self._report is not None:
            return self._report
        trainer = self.trainer
        outcome: tuple[dict | None, str | None] = (None, None)
        failure = None
        if trainer is None or trainer.is_global_zero:
            try:
                outcome = (self._run_check(), None)
            except Exception as error:  # noqa: BLE001 - raised below, after the other ranks know
                failure, outcome = error, (None, f"{type(error).__name__}: {error}")
        if trainer is not None:
            outcome = trainer.strategy.broadcast(outcome, src=0)
        if failure is not None:
            raise failure
        if outcome[1] is not None:
            raise RuntimeError(f"the data check failed on rank 0: {outcome[1]}")
        kept = outcome[0]
        self._report = CheckReport(
            problems=[Problem(**problem) for problem in kept["problems"]],
            warnings=[Problem(**problem) for problem in kept["warnings"]],
            pairs_checked=kept["pairs_checked"],
            images_checked=kept["images_checked"],
            seconds=kept["seconds"],
        )
        return self._report

    def _run_check(self) -> dict:
        """The check's report as a dict (`CheckReport.to_dict`): the one kept in
        ``check_dir`` for the same data, else a new `setup_check` (then kept)."""
        manifest_file, lesions_file = resolve_table_paths(self.manifest, self.lesions)
        key = self._check_key(manifest_file, lesions_file)
        path = None
        if self.check_dir:
            digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
            path = Path(self.check_dir) / f"check-{digest[:16]}.json"
            if path.is_file():
                kept = json.loads(path.read_text())
                if kept.get("key") == key:
                    logger.info(
                        "data check of %s: the report kept in %s (%d problem(s), %d warning(s))",
                        manifest_file,
                        path,
                        len(kept["problems"]),
                        len(kept["warnings"]),
                    )
                    return kept
        report = setup_check(
            self._manifest, self._lesions, self.check_settings(), workers=self.workers()
        )
        logger.info(
            "checked the %s images of %d pairs in %.1f s: %d problem(s), %d warning(s)",
            "/".join(self.modalities),
            report.pairs_checked,
            report.seconds,
            len(report.problems),
            len(report.warnings),
        )
        document = {"key": key, **report.to_dict()}
        # Kept unless it stops the run: after a fix, the next run checks again.
        if path is not None and (not report.problems or self.on_bad_sample == "skip"):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, json.dumps(document, indent=1), suffix="", mode=0o644)
        return document

    def _check_key(self, manifest_file: Path, lesions_file: Path | None) -> dict:
        """What the check's report is a function of: the tables' and the check code's
        SHA-256s, the state of the cache's folders and the settings it reads."""
        cache = None
        if self.cache_dir is not None:
            folder = Path(self.cache_dir)
            info = folder / CACHE_INFO
            # A folder's mtime changes with every entry written, replaced or removed in it.
            folders = {}
            for modality in self.modalities:
                if (folder / modality).is_dir():
                    with os.scandir(folder / modality) as entries:
                        folders[modality] = sorted(
                            (entry.name, entry.stat().st_mtime_ns)
                            for entry in entries
                            if entry.is_dir()
                        )
            state = {"info": info.read_text() if info.is_file() else None, "folders": folders}
            cache = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
        settings = json.loads(json.dumps(asdict(self.check_settings()), default=str))
        return {
            "manifest": sha256_file(manifest_file),
            "lesions": sha256_file(lesions_file) if lesions_file else None,
            # every module of the check (the package holding setup_check), by name
            "check": {
                path.name: sha256_file(path)
                for path in sorted(Path(inspect.getfile(setup_check)).parent.glob("*.py"))
            },
            "cache": cache,
            "settings": settings,
        }
