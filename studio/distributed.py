"""What data-parallel training (trainer=ddp_cpu, trainer=ddp) needs beyond Lightning: the batch split
between the processes, so the recipe (and the cache entry, keyed without devices) stays that of one
process, and worker errors told in the studio's one line.

The process that calls trainer.fit never trains itself under ddp_fork / ddp_spawn: Lightning starts the
workers, waits, and loads rank 0's weights back into the model. Only that calling process goes on to
the cache, the test accuracy, the manifest and W&B, so no worker ever writes or locks any of them.
"""

from __future__ import annotations

import contextlib
import logging
import re

from studio.errors import StudioError


def check_launcher(trainer, strategy: str) -> None:
    """Refuse a strategy that starts its processes by re-running the command line (Lightning's `ddp`): the
    `studio` entry point's argv is Hydra's, so the re-run fails, and it would repeat the whole command (every
    render, manifest and W&B run) in every process. Processes started outside (torchrun) are not affected."""
    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    if isinstance(getattr(trainer.strategy, "launcher", None), _SubprocessScriptLauncher):
        raise StudioError(f"trainer.strategy={strategy} re-runs the command line in every process, which the studio "
                          "cannot do; choose ddp_fork (CPU: trainer=ddp_cpu) or ddp_spawn (GPU: trainer=ddp)")


def per_process_batch(batch_size: int, world_size: int, setting: str) -> int:
    """`batch_size` / `world_size`: the same effective batch (and so the same steps, learning-rate schedule
    and accuracy) whatever the number of processes. A batch the processes cannot share evenly is refused."""
    if world_size <= 1:
        return batch_size
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size
        valid = [b for b in (lower, lower + world_size) if b > 0]
        raise StudioError(f"{setting}={batch_size} cannot be split between {world_size} training processes; "
                          f"choose a multiple of {world_size} (e.g. {' or '.join(map(str, valid))}) or "
                          "another trainer.devices")
    return batch_size // world_size


# how torch.multiprocessing reports a worker's exception: the worker's traceback as text, ending in
# "<module>.<class>: <message>"
_STUDIO_ERROR_LINE = re.compile(r"^studio\.errors\.StudioError: (.*)$", re.MULTILINE)


@contextlib.contextmanager
def worker_errors():
    """A StudioError raised in a training worker (training diverged) reaches the user as the same one line it
    is in a single process, not as the worker's traceback."""
    from torch.multiprocessing import ProcessRaisedException

    # when one worker fails, torch ends the others and warns that it does: noise beside the one line
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")
    level = spawn_log.level
    spawn_log.setLevel(logging.ERROR)
    try:
        yield
    except ProcessRaisedException as e:
        found = _STUDIO_ERROR_LINE.findall(str(e))
        if not found:
            raise
        raise StudioError(found[-1]) from None
    finally:
        spawn_log.setLevel(level)
