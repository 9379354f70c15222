"""Checks a launcher plugin's settings before a sweep starts, so a sweep that cannot run fails in one line
with exit code 2 and leaves no sweep dir behind.

Hydra's sweeper writes the sweep dir and multirun.yaml before it hands the jobs to the launcher, and the
plugins fail late and loudly: the submitit launcher with a traceback once the sweep dir exists, the Ray
launcher by retrying an unreachable address for minutes. studio.sweep.ExitCode runs `preflight` when the
multirun starts, before any of that.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable

from omegaconf import OmegaConf

from studio.errors import StudioError
from studio.files import why_not_creatable

# What hydra-ray-launcher gives a Ray it starts itself (75 MiB: its note on CI machines); Ray 2.x refuses
# the same setting when joining a running cluster, so it is only added for a Ray started here.
RAY_LOCAL_OBJECT_STORE = 78_643_200
RAY_CONNECT_TIMEOUT_S = 5  # a cluster's head answers a TCP connect at once; ray.init would retry for minutes


def submitit_folder(launcher) -> None:
    """hydra.launcher.submitit_folder (pickled jobs, their logs and results) must be a creatable dir."""
    folder = str(launcher.submitit_folder)
    # submitit fills in %j (the job id) per job: the dirs before the first placeholder are what must exist
    existing, why = why_not_creatable(Path(folder.split("%")[0] or "."))
    if why is not None:
        raise StudioError(f"cannot write the submitit folder {folder!r}: {str(existing)!r} {why}; choose another "
                          "with hydra.launcher.submitit_folder=... (a dir every job's machine can write)")


def _ray_endpoint(address: str) -> tuple[str, int]:
    """host and port that `ray.init(address=...)` would connect to ('auto': the cluster on this machine)."""
    if address.startswith("ray://"):  # Ray Client: the client server's own port
        host, _, port = address.removeprefix("ray://").rpartition(":")
        return host, int(port)
    from ray._private.services import canonicalize_bootstrap_address

    resolved = canonicalize_bootstrap_address(address)  # ConnectionError: 'auto' found no running cluster
    if resolved is None:
        raise ConnectionError("no running Ray cluster found")
    host, _, port = resolved.rpartition(":")
    return host, int(port)


def _check_reachable(address: str) -> None:
    setting = f"hydra.launcher.ray.init.address={address}"
    hint = ("start a cluster with `ray start --head` and give its host:port, use address=auto on a node of "
            "a running cluster, or address=null for a Ray on this machine")
    try:
        host, port = _ray_endpoint(address)
        socket.create_connection((host, port), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as e:  # ConnectionError, refused, timed out, unknown host, bad port
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise StudioError(f"Ray is not reachable at {setting} ({why}); {hint}") from None


def ray_cluster(launcher) -> None:
    """Connect to the Ray of hydra.launcher.ray.init (or start one here when its address is null) now.
    The launcher then finds Ray initialized and sends the jobs over this connection."""
    import ray

    init = OmegaConf.to_container(launcher.ray.init, resolve=True) or {}
    address = init.get("address")
    if address in (None, "local"):
        init.setdefault("object_store_memory", RAY_LOCAL_OBJECT_STORE)
    else:
        _check_reachable(str(address))
    if not ray.is_initialized():
        ray.init(**init)


# launcher class (hydra.launcher._target_) -> its check; launchers not named here need none
PREFLIGHT: dict[str, Callable] = {
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher": submitit_folder,
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher": submitit_folder,
    "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher": ray_cluster,
}


def preflight(hydra_cfg) -> None:
    """Run the check of the sweep's launcher (a StudioError names the bad setting)."""
    check = PREFLIGHT.get(str(hydra_cfg.launcher.get("_target_", "")))
    if check is not None:
        check(hydra_cfg.launcher)
