"""Slurm command lines and their output: sbatch options, batch scripts, ``scontrol -o show job``.

Everything a template supplies ends up either in one argv element (``--key=value``) or in the
batch script, which travels on stdin: never inside a command line that a shell parses
unquoted. For SSH, ``shell_line`` quotes every element, because the remote side always runs
the command through the login shell.
"""

from __future__ import annotations

import datetime
import re
import shlex
import string
from collections.abc import Mapping, Sequence
from typing import Any

from connector_service import Directory, File, InvalidRequestError

__all__ = [
    "OUTPUTS_ENV",
    "FN_PLACEHOLDER",
    "STDIN_SCRIPT_WRAPPER",
    "interpolate",
    "parse_job_id",
    "parse_show_job",
    "sbatch_argv",
    "shell_line",
]

OUTPUTS_ENV = "FLYTE_SLURM_OUTPUTS"
"""The job's environment variable naming the file it writes its outputs to (a JSON object)."""

FN_PLACEHOLDER = "{task.fn}"
"""Where flytekitplugins-slurm's function tasks put the task's command in a user script."""

_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")

# sbatch options that would break the connector's contract with the job: --wait blocks the call
# until the job ends, --wrap replaces the script, --array makes many jobs out of one task.
_REFUSED = {
    "wait": "it would block CreateTask until the job ends",
    "W": "it would block CreateTask until the job ends",
    "wrap": "the task's script is the job",
    "array": "a task is one job; use a map task for many",
    "a": "a task is one job; use a map task for many",
    "parsable": "the connector sets it",
    "export-file": "the job's environment comes from --export",
}


def _option_value(key: str, value: Any) -> str | None:
    """An sbatch option's value as text; None for a bare flag (``{"exclusive": true}``)."""
    if value is None or value is True or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a Struct carries every number as a float: nodes=1 arrives as 1.0
    if isinstance(value, str | int | float):
        return str(value)
    raise InvalidRequestError(
        f"slurm: custom.sbatch_config.{key} must be a string, number or true, got {type(value).__name__}"
    )


def sbatch_argv(
    sbatch_config: Mapping[str, Any],
    *,
    outputs_file: str,
    default_output: str | None,
    script_path: str | None = None,
    script_args: Sequence[str] = (),
) -> list[str]:
    """``sbatch --parsable --key=value ... [script [args]]``, one argv element per option.

    The job always gets ``FLYTE_SLURM_OUTPUTS`` through ``--export`` (merged with the task's
    own ``export`` option), so it reaches the job however the site set SBATCH_EXPORT.
    With no ``script_path`` the script comes from stdin; sbatch reads it there only without
    script arguments, so with arguments a small ``sh`` wrapper (``STDIN_SCRIPT_WRAPPER``) copies
    stdin to a temporary file, submits that, and removes it. Not ``/dev/stdin``: it cannot be
    opened when stdin is a socket (what uvloop gives a child for a pipe; what some sshd give).
    """
    argv = ["sbatch", "--parsable"]
    export = f"ALL,{OUTPUTS_ENV}={outputs_file}"
    has_output = False
    for key, value in sbatch_config.items():
        if not isinstance(key, str) or not _OPTION.match(key):
            raise InvalidRequestError(f"slurm: custom.sbatch_config: {key!r} is not an sbatch option name")
        if key in _REFUSED:
            raise InvalidRequestError(f"slurm: custom.sbatch_config.{key} is not supported: {_REFUSED[key]}")
        if value is False:
            continue
        text = _option_value(key, value)
        if key == "export":
            if not text:
                raise InvalidRequestError("slurm: custom.sbatch_config.export needs a value (ALL, NONE or names)")
            export = f"{text},{OUTPUTS_ENV}={outputs_file}"
            continue
        if key in ("output", "o"):
            has_output = True
        if len(key) == 1:
            argv += [f"-{key}"] if text is None else [f"-{key}", text]
        else:
            argv.append(f"--{key}" if text is None else f"--{key}={text}")
    argv.append(f"--export={export}")
    if default_output is not None and not has_output:
        argv.append(f"--output={default_output}")
    if script_path is not None:
        argv += ["--", script_path, *script_args]
    elif script_args:
        argv = ["sh", "-c", STDIN_SCRIPT_WRAPPER.format(sbatch=shlex.join(argv)), "sh", *script_args]
    return argv


STDIN_SCRIPT_WRAPPER = """\
f=$(mktemp) || exit 125
cat > "$f" || {{ rm -f -- "$f"; exit 125; }}
{sbatch} -- "$f" "$@"
s=$?
rm -f -- "$f"
exit "$s"
"""
"""``sh -c`` text that submits the script on stdin with the script arguments ``"$@"``.

``{sbatch}`` is the quoted sbatch command line; sbatch reads the file when it submits, so the
file can go right after. It fails with 125 when it cannot make the file; the script itself is
never rewritten (its shebang may name any interpreter).
"""


def shell_line(argv: Sequence[str], env: Mapping[str, str] | None = None, mkdir: str | None = None) -> str:
    """One POSIX shell command line for SSH: every element quoted, env through ``env``."""
    line = shlex.join(argv)
    if env:
        line = shlex.join(["env", *(f"{k}={v}" for k, v in env.items())]) + " " + line
    if mkdir:
        line = shlex.join(["mkdir", "-p", "--", mkdir]) + " && " + line
    return line


def parse_job_id(stdout: str) -> str:
    """The job id from ``sbatch --parsable`` (``123`` or ``123;cluster``)."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError("sbatch printed no job id")
    job_id = lines[-1].split(";", 1)[0]
    if not re.fullmatch(r"\d+", job_id):
        raise ValueError(f"sbatch printed {lines[-1][:80]!r}, not a job id")
    return job_id


# --------------------------------------------------------------------------- scontrol -o show job

# Keys of ``scontrol show job`` (Slurm 20.11 to 24.x). Values of the free-text keys below may
# contain spaces and "x=y" text; they end only where one of these keys starts.
_KNOWN_KEYS = frozenset(
    """JobId ArrayJobId ArrayTaskId ArrayTaskThrottle HetJobId HetJobOffset HetJobIdSet JobName UserId GroupId
    MCS_label Priority Nice Account QOS WCKey JobState Reason Dependency Requeue Restarts BatchFlag Reboot ExitCode
    DerivedExitCode RunTime TimeLimit TimeMin SubmitTime EligibleTime AccrueTime StartTime EndTime Deadline
    PreemptEligibleTime PreemptTime SuspendTime SecsPreSuspend LastSchedEval Scheduler ResizeTime Partition
    AllocNode:Sid ReqNodeList ExcNodeList NodeList SchedNodeList BatchHost NumNodes NumCPUs NumTasks CPUs/Task
    ReqB:S:C:T TRES AllocTRES ReqTRES Socks/Node NtasksPerN:B:S:C CoreSpec ThreadSpec MinCPUsNode MinMemoryNode
    MinMemoryCPU MinTmpDiskNode Features ClusterFeatures Prefer Reservation DelayBoot OverSubscribe Contiguous
    Licenses LicensesAlloc Network Command WorkDir AdminComment SystemComment Comment StdErr StdIn StdOut Power
    TresPerJob TresPerNode TresPerSocket TresPerTask TresBind TresFreq CpusPerTres MemPerTres MailUser MailType
    NtasksPerTRES BurstBuffer BurstBufferState CpuFreqMin CpuFreqMax CpuFreqGov Switches Wait4Switch
    KillOInInvalidDependent OOMKillStep Container ContainerID GresEnforceBind ResvPorts SegmentSize Extra
    Nodes CPU_IDs Mem GRES Fed FedOrigin FedViableSiblings FedActiveSiblings SiblingsActive SiblingsViable
    Profile Origin ViableSiblings ActiveSiblings NodeListStart SpreadJob""".split()
)
# (Reason is not: scontrol replaces its whitespace with underscores.)
_FREE_TEXT = frozenset(
    """JobName Comment AdminComment SystemComment Command WorkDir StdErr StdIn StdOut Features
    ClusterFeatures Prefer Dependency Extra Container MailUser""".split()
)
_KEY = re.compile(r"(?:(?<=\s)|^)([A-Za-z][A-Za-z0-9_:/]*)=")


def parse_show_job(output: str, job_id: str | None = None) -> dict[str, str]:
    """The ``Key=Value`` fields of one job from ``scontrol -o show job`` (one line per job).

    With several lines (a heterogeneous job) the line whose JobId is ``job_id`` wins. Inside a
    free-text value (JobName, Comment, Command, paths...) only a known key ends the
    value, so ``Comment=a b=c`` stays one value; elsewhere any ``Key=`` does, so keys added by
    newer Slurm versions are still split off. A job's owner can still write a known key into
    its own name or comment; the first occurrence wins, and that gives the owner nothing the
    job's own code could not do anyway.
    """
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        raise ValueError("scontrol printed nothing")
    fields = _parse_line(lines[0])
    if job_id is not None:
        for line in lines:
            candidate = _parse_line(line)
            if candidate.get("JobId") == job_id:
                return candidate
    return fields


def _parse_line(line: str) -> dict[str, str]:
    line = line.strip()
    if not line.startswith("JobId="):
        raise ValueError(f"not a job line: {line[:80]!r}")
    starts: list[tuple[str, int, int]] = []  # key, where the key starts, where its value starts
    current: str | None = None
    for match in _KEY.finditer(line):
        key = match.group(1)
        if current in _FREE_TEXT and key not in _KNOWN_KEYS:
            continue  # "x=y" inside a free-text value
        starts.append((key, match.start(1), match.end()))
        current = key
    fields: dict[str, str] = {}
    for index, (key, _, value_start) in enumerate(starts):
        end = starts[index + 1][1] if index + 1 < len(starts) else len(line)
        fields.setdefault(key, line[value_start:end].strip())
    return fields


# --------------------------------------------------------------------------- script interpolation


def _render(value: Any, spec: str) -> str:
    if isinstance(value, File | Directory):
        return format(value.uri, spec)
    if isinstance(value, datetime.datetime):
        return format(value.isoformat(), spec)
    return format(value, spec)


def interpolate(
    template: str, inputs: Mapping[str, Any], outputs: Mapping[str, Any], where: str = "custom.script"
) -> str:
    """Fill ``{inputs.x}`` and ``{outputs.y}`` the way flytekit's shell tasks do (``{{`` is ``{``).

    Only those two forms are allowed: no attribute chains, indexing or ``{ctx...}``, so a
    template cannot reach into Python objects. Values go in as text, unquoted, exactly as
    flytekit would put them: the script is the task author's own code.
    """
    pieces: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidRequestError(f"slurm: {where}: {exc} (write {{{{ and }}}} for literal braces)") from None
    for literal, field, spec, conversion in parsed:
        pieces.append(literal)
        if field is None:
            continue
        kind, _, name = field.partition(".")
        if kind not in ("inputs", "outputs") or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise InvalidRequestError(
                f"slurm: {where}: {{{field}}} is not {{inputs.NAME}} or {{outputs.NAME}} "
                "(write {{ and }} for literal braces)"
            )
        source = inputs if kind == "inputs" else outputs
        if name not in source:
            known = ", ".join(sorted(source)) or "none"
            raise InvalidRequestError(f"slurm: {where}: {{{field}}} names no {kind[:-1]} of the task (known: {known})")
        value = source[name]
        if conversion == "r":
            value = repr(value)
        elif conversion is not None and conversion != "s":
            raise InvalidRequestError(f"slurm: {where}: conversion !{conversion} is not supported")
        try:
            pieces.append(_render(value, spec or ""))
        except (ValueError, TypeError) as exc:
            raise InvalidRequestError(f"slurm: {where}: {{{field}}}: {exc}") from None
    return "".join(pieces)
