"""Which files of a FOCUS export folder to read: only the latest delivery of each period.

Export tools that keep earlier deliveries write a re-delivered billing period next to the
old one instead of over it; summing both would double the period. This module lists a
folder (local or S3), then picks the files to read with one rule, in this order:

1. **AWS manifest.** A file ``<root>/metadata/BILLING_PERIOD=YYYY-MM/[...]/*-Manifest.json``
   governs the data folder ``<root>/data/BILLING_PERIOD=YYYY-MM/``: exactly the files its
   ``dataFiles`` list names are read (matched by their path below the period folder, so a
   copy of the export under another bucket or folder still matches); the other files of
   that period folder are skipped. A listed file that is missing is an error (a delivery
   still being written, or an incomplete copy): nothing is read rather than half a month.
   Several manifests for one period: the newest (LastModified / mtime) wins.
2. **Azure manifest.** In a period folder ``YYYYMMDD-YYYYMMDD``, a sub-folder (a run) holding
   a ``manifest.json`` is a delivery; the run whose manifest is newest is read, by the
   manifest's own ``runInfo.submittedTime`` when it has one, else by the manifest's
   LastModified / mtime. When the manifest has a ``blobs`` list, exactly the files it names
   are read (missing ones are an error, as above); otherwise every data file of the run.
   Runs without a manifest in such a period (an unfinished delivery) are skipped.
3. **No manifest.** In a period folder (``BILLING_PERIOD=YYYY-MM`` or ``YYYYMMDD-YYYYMMDD``),
   each sub-folder holding data files is one delivery, and the files directly in the
   period folder are one more; when there are several, only the delivery with the newest
   file (LastModified / mtime; ties: the greatest folder name, as AWS execution folders and
   Azure run stamps sort by time) is read. With local copies, mtimes are those of the copy:
   copy with ``cp -p`` / ``rsync -a`` or keep only the latest delivery.
4. Files under no period folder are all read (our own uploads, hand-made exports).

A period folder is recognised anywhere in the path: in the S3 key, or in the path below the
organization's import folder, so a URI pointing inside a period folder still sees its name.
Skipped files are never downloaded or opened; what was skipped is logged (paths relative to
that import folder or ``s3://`` URIs, never credentials). The days a sync covers come from
the files read.

Where the layouts come from (looked up in public documentation and code):

* AWS Data Exports, "Understanding export delivery"
  (docs.aws.amazon.com/cur/latest/userguide/dataexports-export-delivery.html): data in
  ``s3://<bucket>/<prefix>/<export-name>/data/<partition>/``, partition ``BILLING_PERIOD=YYYY-MM``
  for CUR 2.0; ``metadata/<partition>/<export-name>-Manifest.json`` "updated each time the export
  is refreshed", listing the export files, "recommended to read this list programmatically to
  identify the files to ingest", and "delivered only after all export data files are delivered";
  exports either overwrite or create new files on each refresh.
* CUR 2.0 "create new" deliveries seen as ``data/BILLING_PERIOD=2024-01/<timestamp>-<uuid>/
  <export-name>-00001.snappy.parquet`` (JGrubb/open-finops-stack, docs/blog-posts); the legacy CUR
  layout ``<name>/yyyymmdd-yyyymmdd/<assemblyId>/`` keeps each update in its own folder too
  (docs.aws.amazon.com/cur/latest/userguide/understanding-report-versions.html).
* Azure Cost Management exports: ``dataOverwriteBehavior`` ``CreateNewReport`` (default) or
  ``OverwritePreviousReport``; ``partitionData`` places the data "in a blob directory together with a
  manifest file" (learn.microsoft.com, arm-costmanagement Export). Real paths:
  ``<dir>/<export>/20250101-20250131/<run-guid>/part_0_0001.snappy.parquet`` and
  ``20250701-20250731/202507161527/<guid>/part_0_0001.snappy.parquet`` (public ingestion code);
  the manifest names its files in ``blobs[].blobName``, and ingesters pick the run whose manifest is
  newest (public Azure export client tests).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
# Manifests are small JSON files; a bigger one is refused rather than loaded.
MAX_MANIFEST_BYTES = 32 * 1024 * 1024

_AWS_PERIOD = re.compile(r"^BILLING_PERIOD=\d{4}-\d{2}$", re.IGNORECASE)
_AZURE_PERIOD = re.compile(r"^\d{8}-\d{8}$")
_DIRECT = ""  # the delivery made of the files directly in a period folder


class DiscoveryError(Exception):
    """A manifest that cannot be followed; the adapter turns it into a ProviderError."""


@dataclass(frozen=True)
class Found:
    """One listed file. ``parts``: its path segments as the rule sees them (the S3 key, or
    the path below the organization's import folder); ``ref``: what to read (S3 key or local
    path)."""

    parts: tuple[str, ...]
    modified: float  # POSIX timestamp: S3 LastModified or file mtime
    ref: Any
    size: int = 0

    @property
    def name(self) -> str:
        return self.parts[-1]


@dataclass
class Plan:
    files: list[Found] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was skipped, for the log


def is_data_file(name: str) -> bool:
    lower = name.lower()
    return not lower.startswith((".", "_")) and lower.endswith(DATA_SUFFIXES)


def is_manifest(name: str) -> bool:
    lower = name.lower()
    return not lower.startswith((".", "_")) and (
        lower == "manifest.json" or lower.endswith("-manifest.json")
    )


def _is_period(segment: str) -> bool:
    return bool(_AWS_PERIOD.match(segment) or _AZURE_PERIOD.match(segment))


# -- listing ----------------------------------------------------------------------------
def local_listing(
    target: Path, root: Path, check: Callable[[Path], Path]
) -> tuple[list[Found], list[Found]]:
    """(data files, manifests) under the folder ``target``, named by their path below
    ``root`` (the organization's import folder); ``check`` resolves a path and refuses one
    outside that folder (every file is checked, read or not)."""
    data: list[Found] = []
    manifests: list[Found] = []
    for folder, _dirs, names in os.walk(target):
        for name in names:
            kind = data if is_data_file(name) else manifests if is_manifest(name) else None
            if kind is None:
                continue
            path = Path(folder) / name
            resolved = check(path)
            try:
                info = resolved.stat()
            except OSError as exc:
                raise DiscoveryError(f"{path.relative_to(root)}: cannot be read "
                                     f"({type(exc).__name__})") from None
            kind.append(Found(path.relative_to(root).parts, info.st_mtime, path, info.st_size))
    return sorted(data, key=lambda f: f.parts), sorted(manifests, key=lambda f: f.parts)


def s3_listing(client: Any, bucket: str, prefix: str) -> tuple[list[Found], list[Found]]:
    """(data files, manifests) under ``s3://bucket/prefix``; botocore errors propagate."""
    data: list[Found] = []
    manifests: list[Found] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            name = key.rsplit("/", 1)[-1]
            kind = data if is_data_file(name) else manifests if is_manifest(name) else None
            if kind is not None:
                kind.append(Found(tuple(key.split("/")), item["LastModified"].timestamp(), key,
                                  int(item.get("Size") or 0)))
    return sorted(data, key=lambda f: f.parts), sorted(manifests, key=lambda f: f.parts)


def read_local_json(found: Found, check: Callable[[Path], Path]) -> Any:
    path = check(found.ref)
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise DiscoveryError(f"{'/'.join(found.parts)}: manifest larger than "
                             f"{MAX_MANIFEST_BYTES} bytes")
    return _parse(path.read_bytes(), "/".join(found.parts))


def read_s3_json(found: Found, client: Any, bucket: str) -> Any:
    label = f"s3://{bucket}/{found.ref}"
    if found.size > MAX_MANIFEST_BYTES:
        raise DiscoveryError(f"{label}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
    body = client.get_object(Bucket=bucket, Key=found.ref)["Body"]
    return _parse(body.read(MAX_MANIFEST_BYTES + 1), label)


def _parse(raw: bytes, label: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        raise DiscoveryError(f"{label}: manifest is not valid JSON") from None


# -- the rule ---------------------------------------------------------------------------
def choose(
    data: list[Found],
    manifests: list[Found],
    read_json: Callable[[Found], Any],
    label: Callable[[Found], str],
) -> Plan:
    """The files to read (the latest delivery of each period); see the module docstring."""
    plan = Plan()
    handled: set[tuple[str, ...]] = set()
    for period_dir, manifest in _aws_manifests(manifests).items():
        governed = [f for f in data if f.parts[: len(period_dir)] == period_dir]
        handled.update(f.parts for f in governed)
        listed = _listed(read_json(manifest), "dataFiles", label(manifest))
        chosen = _match(listed, governed, len(period_dir), label(manifest))
        _take(plan, chosen, governed, f"{_dir_label(period_dir, label, governed)}: "
                                      f"read the files listed by {label(manifest)}")

    periods: dict[tuple[str, ...], list[Found]] = {}
    for found in data:
        if found.parts in handled:
            continue
        index = next((i for i, part in enumerate(found.parts[:-1]) if _is_period(part)), None)
        if index is None:
            plan.files.append(found)
        else:
            periods.setdefault(found.parts[: index + 1], []).append(found)

    for period_dir, files in periods.items():
        _choose_delivery(plan, period_dir, files, manifests, read_json, label)
    plan.files.sort(key=lambda f: f.parts)
    for note in plan.notes:
        logger.info("FOCUS export: %s", note)
    return plan


def _aws_manifests(manifests: Iterable[Found]) -> dict[tuple[str, ...], Found]:
    """Data period folder -> its newest AWS manifest."""
    found: dict[tuple[str, ...], Found] = {}
    for manifest in manifests:
        parts = manifest.parts
        if not manifest.name.lower().endswith("-manifest.json"):
            continue
        for i in range(len(parts) - 2):
            if parts[i].lower() == "metadata" and _AWS_PERIOD.match(parts[i + 1]):
                period_dir = (*parts[:i], "data", parts[i + 1])
                current = found.get(period_dir)
                if current is None or (manifest.modified, manifest.parts) > (
                    current.modified, current.parts
                ):
                    found[period_dir] = manifest
                break
    return found


def _choose_delivery(
    plan: Plan,
    period_dir: tuple[str, ...],
    files: list[Found],
    manifests: list[Found],
    read_json: Callable[[Found], Any],
    label: Callable[[Found], str],
) -> None:
    depth = len(period_dir)
    deliveries: dict[str, list[Found]] = {}
    for found in files:
        deliveries.setdefault(found.parts[depth] if len(found.parts) > depth + 1 else _DIRECT,
                              []).append(found)
    where = _dir_label(period_dir, label, files)

    if _AZURE_PERIOD.match(period_dir[-1]):
        runs: dict[str, Found] = {}  # run folder -> its newest manifest
        for manifest in manifests:
            parts = manifest.parts
            if (manifest.name.lower() == "manifest.json" and len(parts) > depth + 1
                    and parts[:depth] == period_dir):
                run = parts[depth]
                if run not in runs or manifest.modified > runs[run].modified:
                    runs[run] = manifest
        if runs:
            contents = {run: read_json(manifest) for run, manifest in runs.items()}
            newest = max(runs, key=lambda run: (_submitted(contents[run], runs[run]), run))
            manifest = runs[newest]
            in_run = deliveries.get(newest, [])
            blobs = contents[newest].get("blobs") if isinstance(contents[newest], dict) else None
            if blobs is None:
                chosen = in_run
            else:
                names = _listed({"blobs": [_blob_name(b) for b in _as_list(blobs)]}, "blobs",
                                label(manifest))
                chosen = _match(names, in_run, depth, label(manifest))
            _take(plan, chosen, files, f"{where}: read run {newest} (newest manifest "
                                       f"{label(manifest)})")
            return

    if len(deliveries) == 1:
        plan.files.extend(files)
        return
    newest = max(deliveries, key=lambda d: (max(f.modified for f in deliveries[d]), d))
    shown = newest or "(files directly in the period folder)"
    _take(plan, deliveries[newest], files, f"{where}: read the newest delivery {shown}")


def _submitted(content: Any, manifest: Found) -> float:
    """The run's own timestamp (Azure ``runInfo.submittedTime``), else the manifest's
    LastModified / mtime."""
    run_info = content.get("runInfo") if isinstance(content, dict) else None
    value = run_info.get("submittedTime") if isinstance(run_info, dict) else None
    if isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value.strip())
        except ValueError:
            stamp = None
        if stamp is not None:
            return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
    return manifest.modified


def _blob_name(blob: Any) -> Any:
    return blob.get("blobName") if isinstance(blob, dict) else blob


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _listed(content: Any, key: str, where: str) -> list[tuple[str, ...]]:
    """The path segments of every file a manifest lists under ``key``."""
    values = content.get(key) if isinstance(content, dict) else None
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise DiscoveryError(f"{where}: manifest has no list of file names in {key!r}")
    segments = []
    for value in values:
        path = value.split("://", 1)[-1] if "://" in value else value
        segments.append(tuple(part for part in path.split("/") if part))
    return segments


def _match(
    listed: list[tuple[str, ...]], files: list[Found], depth: int, where: str
) -> list[Found]:
    """The files named by ``listed``: a listed path names the file whose path below the
    period folder (``depth`` segments) is its longest matching tail."""
    by_tail = {f.parts[depth:]: f for f in files}
    longest = max((len(tail) for tail in by_tail), default=0)
    chosen: dict[tuple[str, ...], Found] = {}
    missing = []
    for path in listed:
        hit = next((by_tail[path[-k:]] for k in range(min(longest, len(path)), 0, -1)
                    if path[-k:] in by_tail), None)
        if hit is None:
            missing.append("/".join(path))
        else:
            chosen[hit.parts] = hit
    if missing:
        raise DiscoveryError(
            f"{where} lists {len(missing)} data file(s) that are not there (first: "
            f"{missing[0]}); the delivery may still be in progress or the copy is "
            "incomplete, so nothing was imported; sync again later"
        )
    return list(chosen.values())


def _take(plan: Plan, chosen: list[Found], candidates: list[Found], note: str) -> None:
    plan.files.extend(chosen)
    keep = {f.parts for f in chosen}
    skipped = [f for f in candidates if f.parts not in keep]
    if skipped:
        folders = sorted({"/".join(f.parts[:-1]) for f in skipped})
        plan.notes.append(
            f"{note}; skipped {len(skipped)} other file(s) in "
            f"{', '.join(folders[:5])}{' ...' if len(folders) > 5 else ''}"
        )


def _dir_label(period_dir: tuple[str, ...], label: Callable[[Found], str],
               files: list[Found]) -> str:
    """How messages name a period folder: like ``label`` names files (s3://... or relative)."""
    if files:
        shown = label(files[0])
        tail = "/".join(files[0].parts[len(period_dir):])
        if shown.endswith(tail):
            return shown[: len(shown) - len(tail)].rstrip("/")
    return "/".join(period_dir)


__all__ = ["DiscoveryError", "Found", "Plan", "choose", "is_data_file", "local_listing",
           "read_local_json", "read_s3_json", "s3_listing"]
