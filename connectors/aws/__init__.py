"""AWS connectors: ``boto`` (one allowed API call), ``sagemaker-endpoint`` and ``emr_serverless``.

Calls go over aiobotocore (imported on first use), with the service's default credential
chain or a role the operator gives each Flyte project/domain (``settings.py``).
"""

from connectors.aws.boto import BotoConnector
from connectors.aws.emr import EmrServerlessConnector, EmrServerlessMeta
from connectors.aws.sagemaker import SageMakerEndpointConnector, SageMakerEndpointMeta
from connectors.aws.settings import AwsSettings, AwsTeam, BotoSettings, EmrServerlessSettings, SageMakerSettings

__all__ = [
    "AwsSettings",
    "AwsTeam",
    "BotoConnector",
    "BotoSettings",
    "EmrServerlessConnector",
    "EmrServerlessMeta",
    "EmrServerlessSettings",
    "SageMakerEndpointConnector",
    "SageMakerEndpointMeta",
    "SageMakerSettings",
]
