"""Where a run's files live: ``run.output_dir`` is a local path or a URI of any filesystem pyarrow
knows (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``, ``file://``), the same as Ray Train's
``storage_path``.

Libraries write to local paths (``save_pretrained``, TensorBoard, matplotlib), so every process
that writes a run's files writes them into a local *mirror* of the run directory and pushes what
it wrote; a process that reads pulls first. For a local ``output_dir`` the mirror is the run
directory itself and push and pull do nothing. Checkpoints never pass through the mirror: Ray
Train writes and reads them at the URI itself.

Object stores have no rename, so a directory is pushed with its marker file last
(``adapter_config.json`` for an adapter): a reader that sees the marker sees the whole directory.
Locally, whole files and directories are written beside their place and renamed onto it
(``write_text_atomic``, ``replace_dir``); a command's ``--out`` is claimed and published that way
(``claim_out``, ``publish``).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from pathlib import Path

DEFAULT_CACHE = "~/.cache/rlaf_ray"
CHECKPOINT_PREFIX = "checkpoint_"


def checkpoint_dir_name(iteration: int) -> str:
    """A run's checkpoint directory after ``iteration``: ``checkpoint_000012``."""
    return f"{CHECKPOINT_PREFIX}{iteration:06d}"


def checkpoint_iteration(name: str) -> float:
    """``checkpoint_000012`` -> 12; any other name (a staging directory) -> infinity."""
    number = name.removeprefix(CHECKPOINT_PREFIX)
    return int(number) if name.startswith(CHECKPOINT_PREFIX) and number.isdigit() else math.inf


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for a path or a URI (``Path`` would fold ``s3://`` into ``s3:/``)."""
    if is_uri(location):
        return "/".join([str(location).rstrip("/"), *parts])
    return str(Path(location, *parts))


def upload_order(source: Path, last: str | None = None) -> list[Path]:
    """The files of ``source`` (a file, or a directory's files recursively), sorted, with the
    files named ``last`` after all others."""
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    return sorted(files, key=lambda p: p.name == last)  # stable: the rest keep their order


class RunStorage:
    """One run directory, ``<output_dir>/<name>``, and its local mirror."""

    def __init__(self, location: str, cache_dir: str = DEFAULT_CACHE):
        self.location = str(location).rstrip("/") if is_uri(location) else str(location)
        self.remote = is_uri(location)
        if self.remote:
            digest = hashlib.sha256(self.location.encode()).hexdigest()[:16]
            name = self.location.rsplit("/", 1)[-1] or "run"
            self.local = Path(cache_dir).expanduser() / "mirrors" / digest / name
        else:
            self.local = Path(location)

    def _fs(self):
        from pyarrow import fs

        filesystem, root = fs.FileSystem.from_uri(self.location)
        return filesystem, root

    def where(self, relative: str = "") -> str:
        """What to show a person: the URI (or path) of a file of the run."""
        return join(self.location, relative) if relative else self.location

    def exists(self, relative: str = "") -> bool:
        if not self.remote:
            return (self.local / relative).exists()
        from pyarrow import fs

        filesystem, root = self._fs()
        return filesystem.get_file_info(join(root, relative) if relative else root).type != fs.FileType.NotFound

    def push(self, *relatives: str, last: str | None = None) -> None:
        """Upload files or directories (recursively) of the mirror, in the order given; inside a
        directory, ``last`` (a file name) goes after everything else."""
        if not self.remote:
            return
        filesystem, root = self._fs()
        for relative in relatives:
            for path in upload_order(self.local / relative, last):
                target = join(root, path.relative_to(self.local).as_posix())
                filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
                with path.open("rb") as src, filesystem.open_output_stream(target) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)

    def pull(self, *relatives: str) -> None:
        """Download files or directories of the run into the mirror (none given: the whole run,
        after clearing what the mirror held). Of a checkpoint only its directories are made: a run is
        seen to be there, and which checkpoint holds an adapter; its files are not copied."""
        if not self.remote:
            return
        from pyarrow import fs

        filesystem, root = self._fs()
        if not relatives:
            shutil.rmtree(self.local, ignore_errors=True)
        self.local.mkdir(parents=True, exist_ok=True)
        for relative in relatives or ("",):
            start = join(root, relative) if relative else root
            info = filesystem.get_file_info(start)
            if info.type == fs.FileType.NotFound:
                continue
            infos = ([info] if info.type == fs.FileType.File
                     else filesystem.get_file_info(fs.FileSelector(start, recursive=True)))
            for item in infos:
                rel = item.path[len(root):].lstrip("/")
                parts = rel.split("/")
                # a directory checkpoint_*, not a file such as Ray's checkpoint_manager_snapshot.json
                at = next((i for i, part in enumerate(parts[:-1]) if part.startswith(CHECKPOINT_PREFIX)), None)
                if at is not None:  # a run's or a Tune trial's checkpoint: its directories, not its files
                    (self.local / rel).parent.mkdir(parents=True, exist_ok=True)
                    continue
                if item.type != fs.FileType.File:
                    continue
                target = self.local / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with filesystem.open_input_stream(item.path) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)

    def write_whole(self, relative: str, fill, last: str | None = None) -> None:
        """A directory of the run that must never be seen half-written: ``fill(path)`` writes it
        beside its place, it is renamed into place (``replace_dir``), then pushed with the file
        named ``last`` last."""
        target = self.local / relative
        staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        fill(staging)
        replace_dir(staging, target)
        self.push(relative, last=last)

    def probe(self) -> None:
        """Write and delete a marker: a URI the credentials cannot write fails here, in one line,
        before any actor starts (and not at the first checkpoint, hours later)."""
        if not self.remote:
            return
        filesystem, root = self._fs()
        marker = join(root, ".rlaf-write-probe")
        try:
            filesystem.create_dir(root, recursive=True)
            with filesystem.open_output_stream(marker) as out:
                out.write(b"ok")
            filesystem.delete_file(marker)
        except OSError as err:
            from rlaf_ray.config.errors import ConfigError

            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError([f"run.output_dir: cannot write to {self.location!r}: {first_line}"]) from None


def replace_dir(finished: Path, target: Path) -> None:
    """Put the finished directory at ``target`` by renames: ``target`` is never half-written (a
    reader sees the old directory, none, or the new one). An old ``target`` is removed after."""
    old = None
    if target.exists():
        old = target.with_name(f"{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    finished.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def open_run(location: str, cache_dir: str = DEFAULT_CACHE) -> RunStorage:
    """A run or adapter directory given by a person: a local path made absolute, or a URI pulled
    into its mirror (without checkpoints)."""
    storage = RunStorage(location if is_uri(location) else str(Path(location).expanduser().resolve()), cache_dir)
    storage.pull()
    return storage


def local_copy(location: str, cache_dir: str = DEFAULT_CACHE) -> Path:
    """Where to read a run or adapter directory here (``open_run``)."""
    return open_run(location, cache_dir).local


def write_text_atomic(path: Path, text: str) -> None:
    """Write beside ``path`` and rename onto it: a reader (or a rerun after a crash) sees the old
    file or the new one, never half of it."""
    staging = path.with_name(f"{path.name}.partial-{os.getpid()}")
    staging.write_text(text)
    os.replace(staging, path)


def claim_out(out: str, overwrite: bool) -> Path:
    """Where a command writes before its output is complete: beside ``--out``, renamed onto it by
    ``publish`` at the end, so an interrupted command leaves neither half an output nor a lost old
    one. An ``--out`` that already holds something is refused unless ``--overwrite``."""
    target = Path(out).expanduser()
    if target.exists() and not overwrite and (target.is_file() or any(target.iterdir())):
        from rlaf_ray.config.errors import ConfigError

        raise ConfigError([f"--out {out!r}: already exists; choose another path, or add --overwrite to replace it"])
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
    if staging.is_dir():
        shutil.rmtree(staging)
    return staging


def publish(staging: Path, out: str) -> Path:
    target = Path(out).expanduser()
    if staging.is_dir():
        replace_dir(staging, target)
    else:
        os.replace(staging, target)
    return target
