"""moto's server (``moto_server``, a dev dependency) as a real process on loopback, for the AWS connectors' tests.

Every request moto receives is recorded to a file (``MOTO_ENABLE_RECORDING``), so a test can
check what reached AWS (nothing, for a refused boto method; the same clientToken twice, for a
retried EMR Serverless create). Credentials are moto's dummy ones in the environment, the
default chain's first link; the shared config files are pointed away so a developer's own
AWS set-up is never read.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

from tests.emulator import Emulator, http_ready

__all__ = ["ACCOUNT", "CREDENTIALS", "REGION", "Moto"]

REGION = "us-east-2"
ACCOUNT = "123456789012"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class Moto(Emulator):
    """``moto_server`` with its request recording in ``recording``."""

    def __init__(self, log_dir: Path) -> None:
        self.recording = log_dir / "requests.jsonl"
        server = str(Path(sys.executable).with_name("moto_server"))
        env = {"MOTO_ENABLE_RECORDING": "True", "MOTO_RECORDER_FILEPATH": str(self.recording)}
        super().__init__(
            "moto",
            [server, "-H", "127.0.0.1", "-p", "{port}"],
            log_dir=log_dir,
            env=env,
            ready=http_ready("/moto-api/"),
        )

    def requests(self) -> list[dict[str, Any]]:
        if not self.recording.exists():
            return []
        out = []
        for line in self.recording.read_text().splitlines():
            if line.strip():
                request = json.loads(line)
                if request.get("body_encoded"):
                    request["body"] = base64.b64decode(request["body"]).decode("utf-8", "replace")
                out.append(request)
        return out

    def targets(self) -> list[str]:
        """The operations moto received (``X-Amz-Target``, e.g. ``SageMaker.CreateModel``), in order."""
        out = []
        for request in self.requests():
            headers = {k.lower(): v for k, v in request["headers"].items()}
            out.append(headers.get("x-amz-target", f"{request['method']} {request['url']}"))
        return out

    def client(self, service: str) -> Any:
        """A boto3 client on moto, to set up and inspect what the tests need."""
        import boto3

        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
