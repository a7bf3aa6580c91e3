"""Slurm connectors: ``slurm`` (a batch script) and ``slurm_fn`` (a flytekit function) as Slurm jobs.

Jobs are submitted with ``sbatch`` on this machine or on an allowed login node over SSH,
polled with ``scontrol -o show job`` and cancelled with ``scancel``. Operator settings are
``plugins.slurm`` (see ``settings.py``); asyncssh is imported only when SSH is first used.
"""

from connectors.slurm.connector import SlurmFunctionConnector, SlurmJobMeta, SlurmScriptConnector
from connectors.slurm.settings import SlurmSettings

__all__ = ["SlurmFunctionConnector", "SlurmJobMeta", "SlurmScriptConnector", "SlurmSettings"]
