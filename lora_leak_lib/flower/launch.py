"""``run_flower``: the course's Flower App started with ``flwr run`` on a SuperLink of its own, its history read back."""
from __future__ import annotations

import os
import site
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from .. import config, data, fl, models
from .gate import require_flower
from .history import FlowerHistory
from .job import FlowerJob
from .strategies import secagg_ranges


def run_flower(model: models.PublicModel = models.TINY_BERT, n_clients: int = 3, rounds: int = 2, *,
               source: str | Path | Sequence[data.Example] | None = None, limit: int | None = None,
               held_out: float = 0.25, rank: int = 8, alpha: float | None = None, lr: float = 3e-3,
               local_steps: int = 2, optimizer: str = "adam", batch_size: int = 8, seed: int = 0,
               make_client: Callable[..., fl.Client] = fl.Client, secure_aggregation: bool = False,
               clipping_range: float = 1.0, quantization_range: int | None = None,
               quiet: bool = True) -> FlowerHistory:
    """``fl.run_federated`` with protocol FedAvg, on Flower's simulation runtime (Ray), one node per client.

    Same arguments, data split and seeds as the in-process run, so the captured updates agree with it.
    The run is a Flower App (``lora_leak_lib/flower_app``) started with ``flwr run`` on a SuperLink of its
    own (see ``launch``); ``quiet=False`` prints Flower's log as it runs, and ``history.flower_log`` keeps it.
    With ``secure_aggregation`` the clients send their deltas through Flower's SecAgg+ protocol: each clips
    ``(n_i / max n) · Δ_i`` to ``±clipping_range`` and quantises it to ``quantization_range`` levels
    (default: the finest that cannot overflow, ``2^30`` for 3 clients), and the server learns only the
    weighted mean, to within ``history.error_bound``. LoRA deltas are small (about ``1e-3`` in ``lora_A``,
    at most ``0.25`` in the head at ``lr=0.5``): the default range 1 keeps the step near ``2e-9``.
    """
    require_flower()
    if secure_aggregation:
        clipping_range, quantization_range = secagg_ranges(n_clients, clipping_range, quantization_range)
    setup = fl.FederatedSetup(model=model, rank=rank, alpha=alpha, protocol="fedavg", lr=lr, local_steps=local_steps,
                              optimizer=optimizer, batch_size=batch_size, model_seed=seed)
    shards, evaluation = fl.split_among_clients(fl.load_examples(source, limit, seed), n_clients, held_out, seed)
    from ray import cloudpickle

    with tempfile.TemporaryDirectory(prefix="lora-leak-flower-") as folder:
        run = Path(folder)
        with open(run / "job.pkl", "wb") as file:
            cloudpickle.dump(FlowerJob(setup, shards, evaluation, seed, make_client), file)
        log = launch(run, n_clients, {
            "job": str(run / "job.pkl"), "history": str(run / "history.pt"), "num-server-rounds": rounds,
            "secure-aggregation": secure_aggregation, "clipping-range": float(clipping_range),
            "quantization-range": int(quantization_range or 0)}, quiet)
        if not (run / "history.pt").exists():
            raise RuntimeError("the Flower run ended without a history; its log ends with:\n"
                               + "\n".join(log.splitlines()[-60:]))
        # Flower's processes chose their own device: the history comes back to this process's.
        history = torch.load(run / "history.pt", weights_only=False, map_location=config.device())
    history.flower_log = log
    done = len(history.aggregates) if secure_aggregation else len(history.received) // n_clients
    if len(history.sent) != rounds or done != rounds:
        raise RuntimeError(f"the Flower run finished {done} of {rounds} rounds: see history.flower_log.")
    clipped = sum(r.clipped for r in history.replies.values())
    if clipped:
        warnings.warn(f"SecAgg+ clipped {clipped} update entries at ±{clipping_range}: raise clipping_range.",
                      stacklevel=2)
    return history


APP = Path(__file__).parents[1] / "flower_app"  # the Flower App that run_flower launches


def flower_env(run: Path) -> dict[str, str]:
    """The environment of every Flower process of a run in folder ``run``.

    Flower's telemetry, Flower's update check and Ray's usage stats off (nothing leaves the machine),
    Flower's home (installed app, connection config, telemetry id) inside ``run``, this interpreter's
    scripts first on ``PATH`` (the SuperLink starts ``flower-superexec`` and ``flwr-simulation`` by name) and,
    from a checkout, this copy of the library first on ``PYTHONPATH``.
    """
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1", RAY_USAGE_STATS_ENABLED="0",
               FLWR_HOME=str(run / "home"))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    root = str(Path(__file__).parents[2])
    if root not in {*site.getsitepackages(), site.getusersitepackages()}:  # a checkout: the same code everywhere
        env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    return env


def launch(run: Path, n_clients: int, run_config: Mapping[str, object], quiet: bool = True) -> str:
    """Run the course's Flower App the way Flower 1.42 runs an app: ``flwr run`` against a SuperLink.

    The SuperLink is this run's own (``flower-superlink --simulation`` on a free local port, its state in
    memory, no runtime dependency installation) and stops when the run ends; it starts the simulation
    runtime (``flwr-simulation``: the ``ServerApp`` in a thread, one Ray actor per ``num_cpus=1`` share
    running the ``ClientApp`` of ``n_clients`` simulated SuperNodes). ``run_config`` overrides the app's
    ``[tool.flwr.app.config]``. Return Flower's log: the SuperLink's, then the run's log stream."""
    import psutil
    import tomli_w

    env = flower_env(run)
    home = Path(env["FLWR_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (home / "config.toml").write_text(tomli_w.dumps(
        {"superlink": {"default": "course", "course": {"address": f"127.0.0.1:{port}", "insecure": True}}}))
    (run / "run-config.toml").write_text(tomli_w.dumps(dict(run_config)))
    superlink_log = run / "superlink.log"
    with open(superlink_log, "w") as out:
        superlink = subprocess.Popen(
            ["flower-superlink", "--insecure", "--simulation", "--host", "127.0.0.1", "--port", str(port),
             "--disable-runtime-dependency-installation"], env=env, stdout=out, stderr=subprocess.STDOUT)
    lines: list[str] = []
    try:
        while not _serving(port):
            if superlink.poll() is not None:
                raise RuntimeError(f"the Flower SuperLink exited with code {superlink.returncode}:\n"
                                   + superlink_log.read_text())
            time.sleep(0.2)
        federation = (f"num-supernodes={n_clients} client-resources-num-cpus=1 client-resources-num-gpus=0.0 "
                      f"verbose={str(not quiet).lower()}")
        with subprocess.Popen(["flwr", "run", str(APP), "course", "--run-config", str(run / "run-config.toml"),
                               "--federation-config", federation, "--stream"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as stream:
            for line in stream.stdout:
                lines.append(line)
                if not quiet:
                    print(line, end="", flush=True)
    finally:
        try:
            runtime = psutil.Process(superlink.pid).children(recursive=True)  # SuperExec, simulation, Ray
        except psutil.Error:
            runtime = []
        superlink.terminate()
        try:
            superlink.wait(timeout=60)
        except subprocess.TimeoutExpired:
            superlink.kill()
        for process in psutil.wait_procs(runtime, timeout=60)[1]:
            process.kill()
    return f"--- the SuperLink's log ---\n{superlink_log.read_text()}--- the run's log ---\n{''.join(lines)}"


def _serving(port: int) -> bool:
    """True once the SuperLink on ``port`` answers its health check."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False
