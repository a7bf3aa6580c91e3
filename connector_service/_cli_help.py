"""``serve --help`` for people: metavars and defaults that say what to type, and each env var.

pydantic-settings builds the argparse parser from the Settings' types, so its help shows
``{Path,null}``, ``dict[str,dict[str,Any]]`` and ``default factory: Settings.<lambda>``. The
parser is rewritten here once it is built, before anything is parsed.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["make_readable"]

_METAVARS = {
    "config_file": "FILE",
    "host": "ADDRESS",
    "port": "PORT",
    "metrics_host": "ADDRESS",
    "metrics_port": "PORT",
    "connector": "MODULE:ATTR",
    "app_dir": "DIR",
    "plugins": "JSON",
    "thread_pool_size": "N",
    "sensor_poke_timeout": "SECONDS",
    "workers": "N",
    "max_concurrent_rpcs": "N",
    "timeout_cap": "SECONDS",
    "operation_timeouts": "JSON",
    "shutdown_delay": "SECONDS",
    "grace_period": "SECONDS",
    "max_message_size": "BYTES",
    "tls": "JSON",
    "tls.cert_file": "FILE",
    "tls.key_file": "FILE",
    "tls.client_ca_file": "FILE",
    "secrets_dir": "DIR",
    "resource_meta_key": "KEY",
    "protocols": "LIST",
}
_DEFAULTS = {
    "connector": "none",
    "plugins": "{}",
    "operation_timeouts": "{}",
    "workers": "$WEB_CONCURRENCY or 1",
    "tls": "off",
    "protocols": "v1,v2 when flyteidl2 is installed, else v1",
}
_HELP = {
    "tls": 'All of TLS as one JSON object, e.g. {"cert_file": "tls.crt", "key_file": "tls.key"}; or the flags below.',
}
_ENV_FOR_DEST = {"connector": "CONNECTOR_CONNECTORS"}
_DEFAULT = re.compile(r"\s*\(default(?: factory)?: [^()]*(?:\([^()]*\))?[^()]*\)$")


def make_readable(parser: argparse.ArgumentParser, env_prefix: str) -> None:
    """Rewrite each option's metavar and help in place; unknown options keep a plain VALUE."""
    for action in parser._actions:  # argparse has no public accessor for the options it holds
        if not action.option_strings or action.dest == "help":
            continue
        dest = action.dest
        if dest in _METAVARS:
            action.metavar = _METAVARS[dest]
        elif action.metavar is not None and not str(action.metavar).startswith("{"):  # {a,b}: a Literal's choices
            action.metavar = "VALUE"
        original = (action.help or "").replace("%%", "%")
        help_text = _HELP.get(dest, original)
        match = _DEFAULT.search(original)
        default = match.group(0).strip()[1:-1].split(": ", 1)[1] if match else None
        help_text = _DEFAULT.sub("", help_text)
        if dest in _DEFAULTS:
            default = _DEFAULTS[dest]
        elif default in ("null", "None"):
            default = "unset"
        elif default in ("True", "False"):
            default = default.lower()
        env = _ENV_FOR_DEST.get(dest, env_prefix + dest.upper().replace(".", "__"))
        parts = [help_text, f"(default: {default})" if default is not None else "", f"[env {env}]"]
        action.help = " ".join(p for p in parts if p).replace("%", "%%")
