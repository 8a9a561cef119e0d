"""``run.py run PIPELINE --workers N``: N training processes on this machine, supervised.

The same launch a cluster uses, on 127.0.0.1: every worker runs the same command with a
``TF_CONFIG`` naming the cluster and its own index, so ``runtime.strategy: auto`` picks
``MultiWorkerMirroredStrategy``. Worker 0 is the chief and works in the run directory; the others
work in copies of it in a temporary folder (their metrics, plots and exports are thrown away).
The stages before ``train`` run once, in the chief's folder, before the workers start.

Fault tolerance is ``BackupAndRestore``'s: when a worker dies, the others cannot go on (each
step all-reduces with every worker), so all are stopped and started again, and each resumes
from its last finished epoch.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN_PY = Path(__file__).resolve().parents[1] / "run.py"


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_configs(ports: list[int], host: str = "127.0.0.1") -> list[str]:
    """One ``TF_CONFIG`` per worker of a cluster on ``host`` (worker 0 is the chief).

    Example:
        >>> json.loads(tf_configs([2222, 2223])[1])["task"]
        {'type': 'worker', 'index': 1}
    """
    cluster = {"worker": [f"{host}:{port}" for port in ports]}
    return [
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        for i in range(len(ports))
    ]


def _link_or_copy(src: str, dst: str) -> None:
    # Hard links are free and safe here: the runner replaces files, never edits them in place.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def worker_dir(run_dir: Path, root: Path, index: int) -> Path:
    """A copy of ``run_dir`` (without checkpoints, logs and locks) for worker ``index``."""
    target = root / f"worker-{index}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(
        run_dir,
        target,
        copy_function=_link_or_copy,
        # logs/ too: TensorBoard and CSV logs are appended to, which a hard link would share
        ignore=shutil.ignore_patterns("checkpoints", "logs", ".lock", "*.tmp*"),
    )
    return target


def launch_workers(
    argv: list[str],
    run_dir: Path,
    workers: int,
    before_train: str | None,
    max_restarts: int = 3,
) -> int:
    """Runs ``run.py run`` as ``workers`` processes of one training cluster and supervises them.

    Args:
        argv: the ``run.py run ...`` arguments without ``--workers`` and ``--run-dir``.
        run_dir: the chief's run directory.
        workers: number of processes (>= 1).
        before_train: the stage before ``train`` (run once, by the chief, first), or None.
        max_restarts: how many times a failed cluster is restarted.

    Returns:
        0 when every worker finished; else the first failing exit code.
    """
    base = [sys.executable, str(RUN_PY), *argv]
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    if before_train:
        code = subprocess.run(
            [*base, "--run-dir", str(run_dir), "--until", before_train], env=env
        ).returncode
        if code:
            return code
    root = Path(tempfile.mkdtemp(prefix="rnn-workers-"))
    dirs = [run_dir] + [worker_dir(run_dir, root, i) for i in range(1, workers)]
    attempt = 0
    try:
        while True:
            configs = tf_configs(free_ports(workers))
            # The chief prints; the others log to their folders (shown if they fail).
            logs = [None] + [(d / "worker.log").open("w") for d in dirs[1:]]
            procs = [
                subprocess.Popen(
                    [*base, "--run-dir", str(d)],
                    env={**env, "TF_CONFIG": tf_config},
                    stdout=log,
                    stderr=subprocess.STDOUT if log else None,
                )
                for d, tf_config, log in zip(dirs, configs, logs, strict=True)
            ]
            print(
                f"run: {workers} workers on 127.0.0.1 "
                f"({', '.join(json.loads(configs[0])['cluster']['worker'])}); chief: {run_dir}",
                file=sys.stderr,
                flush=True,
            )
            failed = _supervise(procs)
            for log in logs[1:]:
                log.close()
            if failed is None:
                return 0
            index, code = failed
            if index:
                tail = (dirs[index] / "worker.log").read_text(errors="replace")[-3000:]
                print(f"run: worker {index}'s last output:\n{tail}", file=sys.stderr, flush=True)
            attempt += 1
            if attempt > max_restarts:
                print(
                    f"run: worker {index} exited with code {code}; giving up after "
                    f"{max_restarts} restarts",
                    file=sys.stderr,
                    flush=True,
                )
                return code or 1
            print(
                f"run: worker {index} exited with code {code}; restarting all {workers} workers "
                f"({attempt}/{max_restarts}); training resumes from the last backup",
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _supervise(procs: list[subprocess.Popen]) -> tuple[int, int] | None:
    """Waits for every process; on the first failure stops the rest.

    Returns:
        None when all exited with 0, else ``(index, exit code)`` of the first that failed.
    """
    while True:
        codes = [p.poll() for p in procs]
        for i, code in enumerate(codes):
            if code not in (None, 0):
                for other in procs:
                    if other.poll() is None:
                        other.terminate()
                for other in procs:
                    try:
                        other.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        other.kill()
                return i, code
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.5)
