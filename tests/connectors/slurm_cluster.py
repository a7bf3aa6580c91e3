"""A real single-host Slurm cluster and a real sshd on loopback, for the Slurm connector's tests.

Everything lives in one temp dir: a munge key and ``munged``, a ``slurm.conf`` (free ports,
state and spool dirs, no cgroups, no accounting) with ``slurmctld -D`` and ``slurmd -D``, and
an ``sshd`` on 127.0.0.1 with its own host key, key-only login for a per-session client key,
and ``SetEnv SLURM_CONF=...`` standing in for a login node's system-wide Slurm config. The
machine's /etc/slurm, /etc/munge and /etc/ssh are never read or changed.

Without the binaries (``.ci/install-system-deps`` installs them) the tests skip, except under
``CI``, where a missing binary fails them.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.slurm._commands import parse_show_job
from tests.utils import free_port

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel")
SSH_BINARIES = ("sshd", "ssh-keygen")


def which(binary: str) -> str | None:
    """A binary on PATH or in the sbin dirs (which a non-root PATH may lack)."""
    found = shutil.which(binary)
    if found:
        return found
    for directory in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        candidate = Path(directory) / binary
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require(binaries: tuple[str, ...], what: str) -> dict[str, str]:
    """Paths of ``binaries``; skip (fail under CI) naming the missing ones."""
    paths = {name: which(name) for name in binaries}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        message = (
            f"{what} needs {', '.join(missing)}: run .ci/install-system-deps (apt: slurm-wlm munge openssh-server)"
        )
        if os.environ.get("CI"):
            pytest.fail(message + " -- CI is set, so a missing binary is an error", pytrace=False)
        pytest.skip(message)
    return {name: str(path) for name, path in paths.items()}


def _wait_for(check: object, what: str, seconds: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not happen within {seconds} s")


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, seconds: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (sshd's per-connection processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


class SlurmCluster:
    """munged + slurmctld + slurmd on this host, configured from ``root`` only."""

    def __init__(self, root: Path, binaries: dict[str, str]) -> None:
        self.root = root
        self.bin = binaries
        self.user = getpass.getuser()
        self.conf = root / "slurm.conf"
        self.munge_socket = root / "munge" / "munge.socket"
        self.ctld_port = free_port()
        self.slurmd_port = free_port()
        self.munged: subprocess.Popen[bytes] | None = None
        self.slurmctld: subprocess.Popen[bytes] | None = None
        self.slurmd: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a Slurm client command needs to find this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def _popen(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.root / f"{log}.out", "ab") as stderr:  # the child keeps its own copy of the fd
            return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, **self.env})

    def start(self) -> None:
        (self.root / "munge").mkdir(mode=0o755)
        for sub in ("state", "spool"):
            (self.root / sub).mkdir()
        (self.root / "plugstack.conf").write_text("")
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))  # what mungekey --create writes (older munge has no mungekey)
        key.chmod(0o600)
        self.munged = self._popen(
            [
                self.bin["munged"],
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                f"--log-file={self.root / 'munge' / 'munged.log'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
            ],
            "munged",
        )
        _wait_for(self.munge_socket.exists, "munged's socket", proc=self.munged)
        self.conf.write_text(self._slurm_conf())
        self.start_controller()
        self.slurmd = self._popen([self.bin["slurmd"], "-D", "-N", "localhost", "-f", str(self.conf)], "slurmd")
        _wait_for(lambda: "State=IDLE" in self.scontrol("show", "node", "localhost"), "node localhost idle")

    def _slurm_conf(self) -> str:
        root = self.root
        return f"""\
ClusterName=flytetest
SlurmctldHost=localhost
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser={self.user}
SlurmdUser={self.user}
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
PlugStackConfig={root}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
SchedulerType=sched/builtin
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
# Jobs stay visible to scontrol for the whole session; unknown ids are tested with ids never used.
MinJobAge=3600
ReturnToService=2
# Fail fast when the controller is down (the connector's UNAVAILABLE path).
MessageTimeout=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=16 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

    def start_controller(self) -> None:
        """Start slurmctld, recovering jobs from the state dir (as after a restart)."""
        self.slurmctld = self._popen([self.bin["slurmctld"], "-D", "-i", "-f", str(self.conf)], "slurmctld")
        _wait_for(lambda: self._port_open(self.ctld_port), "slurmctld listening", proc=self.slurmctld)

    def stop_controller(self) -> None:
        """Stop slurmctld (SIGTERM: it saves its state, as a controller going down for a restart does)."""
        _stop(self.slurmctld)
        self.slurmctld = None

    @staticmethod
    def _port_open(port: int) -> bool:
        with contextlib.closing(socket.socket()) as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def run(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        # cwd: jobs submitted here write their default slurm-<id>.out into the cluster's dir.
        return subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            timeout=30,
            cwd=self.root,
        )

    def scontrol(self, *args: str) -> str:
        return self.run(self.bin["scontrol"], "-o", *args).stdout

    def job(self, job_id: str) -> dict[str, str]:
        """The job's scontrol fields, read directly (not through the connector)."""
        return parse_show_job(self.scontrol("show", "job", job_id), job_id)

    def stop(self) -> None:
        if self.slurmctld is not None and self.slurmctld.poll() is None:
            self.run(self.bin["scancel"], f"--user={self.user}")  # our private cluster's jobs only
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and "JobState=RUNNING" in self.scontrol("show", "jobs"):
                time.sleep(0.1)
        _stop(self.slurmd)
        _stop(self.slurmctld)
        _stop(self.munged)


class SSHServer:
    """sshd on 127.0.0.1:<free port>, key-only, with a host key and a client key made for the session."""

    def __init__(self, root: Path, binaries: dict[str, str], session_env: dict[str, str]) -> None:
        self.root = root
        self.bin = binaries
        self.port = free_port()
        self.user = getpass.getuser()
        self.session_env = session_env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "sshd.log"
        self.host_key = root / "ssh_host_ed25519_key"
        self.client_key = root / "client_key"
        self.known_hosts = root / "known_hosts"
        self.secrets = root / "secrets"

    def _keygen(self, path: Path, comment: str) -> None:
        subprocess.run(
            [self.bin["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
        )

    def setup(self) -> None:
        self._keygen(self.host_key, "flyte-test-host")
        self._keygen(self.client_key, "flyte-test-client")
        (self.root / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        host_pub = " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub}\n")
        self.secrets.mkdir(mode=0o700)
        shutil.copy(self.client_key, self.secrets / "slurm_private_key")
        setenv = " ".join(f"{k}={v}" for k, v in self.session_env.items())
        (self.root / "sshd_config").write_text(
            f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {self.root}/sshd.pid
AuthorizedKeysFile {self.root}/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PrintMotd no
MaxStartups 100
LogLevel INFO
SetEnv {setenv}
"""
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir

    def start(self) -> None:
        with open(self.log, "ab") as stderr:
            self.proc = subprocess.Popen(
                [self.bin["sshd"], "-D", "-e", "-f", str(self.root / "sshd_config")],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        _wait_for(lambda: SlurmCluster._port_open(self.port), "sshd listening", proc=self.proc)

    def kill(self) -> None:
        """sshd goes away: the listener and every connection it serves."""
        if self.proc is None:
            return
        for child in _children(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        _stop(self.proc, signal.SIGKILL)
        self.proc = None

    def logins(self) -> int:
        """How many SSH logins sshd accepted so far (one per connection)."""
        return self.log.read_text(errors="replace").count("Accepted publickey")


@contextlib.contextmanager
def running_cluster(root: Path) -> Iterator[SlurmCluster]:
    cluster = SlurmCluster(root, require(SLURM_BINARIES, "the Slurm connector tests"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    root = tmp_path_factory.mktemp("slurm")
    root.chmod(0o755)  # munged wants its socket dir reachable
    with running_cluster(root) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def sshd(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    server = SSHServer(tmp_path_factory.mktemp("sshd"), require(SSH_BINARIES, "the Slurm SSH tests"), slurm_cluster.env)
    server.setup()
    server.start()
    try:
        yield server
    finally:
        server.kill()


# --------------------------------------------------------------------------- captured scontrol lines

CAPTURED = Path(__file__).resolve().parents[1] / "fixtures" / "flytekit" / "slurm_scontrol_lines.json"


def capture_scontrol_lines(cluster: SlurmCluster) -> dict[str, str]:
    """Real ``scontrol -o show job`` lines for the states this cluster can produce, by name.

    Regenerate ``slurm_scontrol_lines.json`` with
    ``.venv/bin/python -m tests.connectors.slurm_cluster`` (about 10 s).
    """

    def submit(script: str, *options: str) -> str:
        result = cluster.run(cluster.bin["sbatch"], "--parsable", *options, stdin=script)
        if result.returncode != 0:
            raise RuntimeError(result.stderr)
        return result.stdout.strip()

    def show(job: str) -> str:
        return cluster.scontrol("show", "job", job).strip()

    def until(job: str, text: str) -> None:
        _wait_for(lambda: text in show(job), f"job {job} {text}")

    lines: dict[str, str] = {}
    held = submit("#!/bin/bash\ntrue\n", "--hold", "--job-name=name with spaces x=1", "--comment=a b=c  d")
    lines["pending_held"] = show(held)
    sleeper = submit("#!/bin/bash\nsleep 60\n")
    until(sleeper, "JobState=RUNNING")
    lines["running"] = show(sleeper)
    cluster.run("scontrol", "suspend", sleeper)
    until(sleeper, "JobState=SUSPENDED")
    lines["suspended"] = show(sleeper)
    cluster.run("scontrol", "resume", sleeper)
    until(sleeper, "JobState=RUNNING")
    cluster.run("scontrol", "requeue", sleeper)
    until(sleeper, "Restarts=1")
    lines["requeued_completing"] = show(sleeper)
    until(sleeper, "JobState=PENDING")
    lines["requeued_pending"] = show(sleeper)
    special = submit("#!/bin/bash\nsleep 60\n")
    until(special, "JobState=RUNNING")
    cluster.run("scontrol", "requeuehold", "State=SpecialExit", special)
    until(special, "JobState=SPECIAL_EXIT")
    lines["special_exit"] = show(special)
    done = submit("#!/bin/bash\necho hi\n")
    failed = submit("#!/bin/bash\nexit 3\n")
    killed = submit("#!/bin/bash\nkill -9 $$\n")
    cancelled = submit("#!/bin/bash\nsleep 60\n")
    until(cancelled, "JobState=RUNNING")
    cluster.run(cluster.bin["scancel"], cancelled)
    for job, state in ((done, "COMPLETED"), (failed, "FAILED"), (killed, "FAILED"), (cancelled, "CANCELLED")):
        until(job, f"JobState={state}")
    lines.update(completed=show(done), failed=show(failed), failed_signal=show(killed), cancelled=show(cancelled))
    never = submit("#!/bin/bash\ntrue\n", f"--dependency=afterok:{failed}")
    until(never, "Reason=DependencyNeverSatisfied")
    lines["pending_dependency_never"] = show(never)
    too_big = submit("#!/bin/bash\ntrue\n", "--cpus-per-task=64")
    until(too_big, "Reason=")
    lines["pending_partition_config"] = show(too_big)
    for job in (held, sleeper, special, never, too_big):
        cluster.run(cluster.bin["scancel"], job)
    return lines


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="slurm-capture-") as tmp:
        Path(tmp).chmod(0o755)
        with running_cluster(Path(tmp)) as live:
            captured = capture_scontrol_lines(live)
    CAPTURED.write_text(json.dumps(captured, indent=1, sort_keys=True) + "\n")
    print(f"wrote {CAPTURED} ({len(captured)} lines)")
