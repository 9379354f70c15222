"""One command's run: the on-disk manifest (the source of truth) and its W&B mirror (offline by default).

W&B is a mirror: offline tables lose their images, and a W&B failure (no network, unwritable dir, a
crashed service) must never cost the local results. So every W&B call here warns once and carries on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import OmegaConf

from studio.files import write_json

log = logging.getLogger("studio")
WANDB_DIRS = {"WANDB_DIR": "", "WANDB_DATA_DIR": "data", "WANDB_CACHE_DIR": "cache", "WANDB_CONFIG_DIR": "config"}


def write_manifest(run_dir: str | Path, command: str, cfg, metrics: dict, items: list, artifacts: dict,
                   status: str = "complete") -> Path:
    """Write `run_dir/manifest.json` atomically; paths in items/artifacts are relative to run_dir."""
    path = Path(run_dir) / "manifest.json"
    write_json(path, {"command": command, "status": status,
                      "config": OmegaConf.to_container(cfg, resolve=True),
                      "metrics": metrics, "items": items, "artifacts": artifacts})
    return path


class Tracker:
    """Context manager around a W&B run; `run` is None when W&B is off or failed to start."""

    def __init__(self, cfg, command: str, output_dir: str | Path, group: str):
        self.cfg, self.command, self.output_dir, self.group = cfg, command, Path(output_dir), group
        self.run = None
        self._warned = False

    def _warn(self, what: str, error: BaseException) -> None:
        if not self._warned:
            log.warning("W&B %s failed (%s: %s); results are still written to disk",
                        what, type(error).__name__, str(error).splitlines()[0] if str(error) else "")
            self._warned = True

    def __enter__(self) -> "Tracker":
        logger = self.cfg.logger
        if logger.name != "wandb":
            return self
        wandb_dir = Path(self.cfg.paths.wandb).resolve()
        # Every W&B file under outputs/, so a run is self-contained and `wandb sync` works later.
        for var, sub in WANDB_DIRS.items():
            os.environ[var] = str(wandb_dir / sub)
        # W&B's own error telemetry (to W&B's servers, not the user's run): after an online init that could
        # not reach its server, its exporter held the process ~12 s at exit. Opt back in with =true.
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        try:
            import wandb

            wandb_dir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                mode=logger.mode, project=logger.project, entity=logger.entity, tags=list(logger.tags),
                group=self.group, job_type=self.command, dir=str(wandb_dir),
                name=f"{self.command}-{self.output_dir.name}",
                config=OmegaConf.to_container(self.cfg, resolve=True), reinit="finish_previous",
                settings=wandb.Settings(init_timeout=logger.init_timeout, silent=True),
            )
        except Exception as e:  # noqa: BLE001 - any W&B failure must leave the local run intact
            self._warn("init", e)
            self.run = None
        return self

    @property
    def wandb_run_dir(self) -> Path | None:
        """The W&B run's own directory (offline: what `wandb sync` takes), or None."""
        try:
            return Path(self.run.dir).parent if self.run is not None else None
        except Exception as e:  # noqa: BLE001
            self._warn("run dir", e)
            return None

    def log(self, data: dict, step: int | None = None) -> None:
        if self.run is not None:
            try:
                self.run.log(data, step=step)
            except Exception as e:  # noqa: BLE001
                self._warn("log", e)

    def log_table(self, key: str, rows: list[dict], images: tuple[str, ...] = ()) -> None:
        """A list of flat dicts as one W&B table (columns from the first row); the columns named in `images`
        hold PNG paths and are shown as images."""
        if self.run is not None and rows:
            try:
                import wandb

                columns = list(rows[0])
                data = [[wandb.Image(str(r[c])) if c in images else r.get(c) for c in columns] for r in rows]
                self.run.log({key: wandb.Table(columns=columns, data=data)})
            except Exception as e:  # noqa: BLE001
                self._warn("table", e)

    def log_image(self, key: str, path, caption: str | None = None) -> None:
        """One PNG file as a W&B image."""
        if self.run is not None:
            try:
                import wandb

                self.run.log({key: wandb.Image(str(path), caption=caption or Path(path).stem)})
            except Exception as e:  # noqa: BLE001
                self._warn("images", e)

    def log_images(self, key: str, paths: list, captions: list[str] | None = None) -> None:
        """PNG files as a list of W&B images (offline runs keep them in the run directory)."""
        if self.run is not None and paths:
            try:
                import wandb

                captions = captions or [Path(p).stem for p in paths]
                self.run.log({key: [wandb.Image(str(p), caption=c) for p, c in zip(paths, captions)]})
            except Exception as e:  # noqa: BLE001
                self._warn("images", e)

    def summary(self, metrics: dict) -> None:
        if self.run is not None:
            try:
                self.run.summary.update(metrics)
            except Exception as e:  # noqa: BLE001
                self._warn("summary", e)

    def lightning_logger(self, prefix: str = ""):
        """A Lightning logger writing into this run (or False when W&B is off)."""
        if self.run is None:
            return False
        from pytorch_lightning.loggers import WandbLogger

        return WandbLogger(experiment=self.run, prefix=prefix)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.run is not None:
            try:
                self.run.finish(exit_code=0 if exc_type is None else 1)
            except Exception as e:  # noqa: BLE001
                self._warn("finish", e)
            self.run = None


# --- Reading offline runs back -------------------------------------------------------------------
# An offline run is one `run-<id>.wandb` file: W&B's LevelDB-style log of protobuf Records. wandb no
# longer ships a Python reader, and tests (and users checking what will be synced) need one.
_LOG_HEADER, _BLOCK, _RECORD_HEADER = 7, 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _log_records(raw: bytes):
    """Yield the payload of every record in a LevelDB-style log (records may span 32 KiB blocks)."""
    if raw[:4] != b":W&B":
        raise ValueError("not a W&B run file")
    pos, parts = _LOG_HEADER, []
    while pos + _RECORD_HEADER <= len(raw):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _RECORD_HEADER:  # block trailer padding
            pos += left_in_block
            continue
        length = int.from_bytes(raw[pos + 4:pos + 6], "little")
        kind = raw[pos + 6]
        data = raw[pos + _RECORD_HEADER:pos + _RECORD_HEADER + length]
        pos += _RECORD_HEADER + length
        if kind == _FULL:
            yield data
        elif kind == _FIRST:
            parts = [data]
        elif kind == _MIDDLE:
            parts.append(data)
        elif kind == _LAST:
            yield b"".join(parts + [data])
        else:  # zero padding at the end of a file that was cut short
            break


def read_offline_run(run_dir: str | Path) -> dict:
    """{'run': {id, group, job_type}, 'config', 'summary', 'history': [row, ...]} of an offline run dir."""
    import json

    from wandb.proto import wandb_internal_pb2

    path = next(Path(run_dir).glob("run-*.wandb"), None)
    if path is None:
        raise FileNotFoundError(f"no W&B run file (run-*.wandb) in {str(run_dir)!r}; give an offline run's dir, "
                                "e.g. wandb/offline-run-<time>-<id>")
    out = {"run": {}, "config": {}, "summary": {}, "history": []}

    def key(item):
        return "/".join(item.nested_key) if item.nested_key else item.key

    for payload in _log_records(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out["run"] = {"id": run.run_id, "group": run.run_group, "job_type": run.job_type}
            out["config"].update({key(i): json.loads(i.value_json) for i in run.config.update})
        elif kind == "config":
            out["config"].update({key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            out["history"].append({key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({key(i): json.loads(i.value_json) for i in record.summary.update})
    return out
