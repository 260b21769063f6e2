"""A one-node Slurm cluster on this machine, for the tests (Debian's slurm-wlm, auth/none, as root).

The `slurm_cluster` fixture writes a minimal slurm.conf in a temporary folder
(no munge: auth/none and cred/none; no cgroups: proctrack/linuxproc and
task/none; no accounting), starts slurmctld and slurmd with SLURM_CONF
pointing at it, waits until the node is idle, and at the end cancels what is
left and stops both daemons by their pid files. Where Slurm cannot be started
the tests skip with the reason, unless NOISEFLOOR_REQUIRE_SLURM=1 (CI), where
they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

REQUIRE_ENV = "NOISEFLOOR_REQUIRE_SLURM"
# Slurm's CPUs here are slots, not cores (no cgroups, task/none): 4 let the time-limit sweep's run, a job array and
# a 2-task DDP job run side by side on a 2-core machine instead of queueing behind one another
SLOTS = 4
COMMANDS = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _real_memory_mb(slurmd: str) -> int:
    """What slurmd itself measures (`slurmd -C`), so the node never registers with 'low RealMemory'."""
    found = re.search(r"RealMemory=(\d+)", subprocess.run([slurmd, "-C"], capture_output=True, text=True).stdout)
    return int(found.group(1)) if found else 1024


def write_conf(folder: Path, node: str, cpus: int, slurmd: str = "slurmd") -> Path:
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True)
    conf = folder / "slurm.conf"
    conf.write_text(f"""\
ClusterName=noisefloor-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
KillWait=0
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_real_memory_mb(slurmd)} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _node_state() -> str:
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def _stop(folder: Path, daemons: list[subprocess.Popen]) -> None:
    def active_jobs() -> list[str]:
        return subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30).stdout.split()

    if active_jobs():
        subprocess.run(["scancel", *active_jobs()], capture_output=True, timeout=30)
        deadline = time.time() + 20  # a job step outliving slurmd would linger as an orphan slurmstepd
        while active_jobs() and time.time() < deadline:
            time.sleep(0.2)
    for name in ("slurmd", "slurmctld"):
        try:
            os.kill(int((folder / f"{name}.pid").read_text().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
    for daemon in daemons:
        try:
            daemon.wait(5)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


class ClusterUnavailable(Exception):
    """Why a Slurm cluster cannot be started on this machine."""


@contextmanager
def one_node_cluster(folder: Path, cpus: int = SLOTS):
    """Start slurmctld and slurmd with a slurm.conf in `folder` (SLURM_CONF set meanwhile), the node with `cpus`
    CPUs; yield its path."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])  # daemons live in sbin
    found = {c: shutil.which(c, path=search) for c in COMMANDS}
    missing = [c for c, path in found.items() if path is None]
    if missing:
        raise ClusterUnavailable(f"Slurm is not installed ({', '.join(missing)} not on PATH; apt-get install slurm-wlm)")
    if os.geteuid() != 0:
        raise ClusterUnavailable("the test cluster's daemons (auth/none) must be started as root")
    node = socket.gethostname().split(".")[0]
    conf = write_conf(folder, node, cpus, found["slurmd"])
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)  # the daemons, the CLI's sbatch/squeue and the jobs all read it
    daemons = [subprocess.Popen([found[daemon], "-D", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
               for daemon, extra in (("slurmctld", ["-i"]), ("slurmd", []))]
    try:
        deadline = time.time() + 60
        while _node_state() != "idle":
            exited = [Path(d.args[0]).name for d in daemons if d.poll() is not None]
            if exited or time.time() > deadline:
                log = "".join((folder / f"{name}.log").read_text(errors="replace")[-400:]
                              for name in ("slurmctld", "slurmd") if (folder / f"{name}.log").exists())
                raise ClusterUnavailable(f"the Slurm cluster did not come up ({', '.join(exited) or 'node not idle'}): {log}")
            time.sleep(0.2)
        yield conf
    finally:
        _stop(folder, daemons)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """SLURM_CONF of a running one-node cluster with a `debug` partition of SLOTS CPUs."""
    try:
        with one_node_cluster(tmp_path_factory.mktemp("slurm")) as conf:
            yield conf
    except ClusterUnavailable as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"the Slurm tests cannot run here: {exc} ({REQUIRE_ENV}=1)")
        pytest.skip(str(exc))
