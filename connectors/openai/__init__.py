"""OpenAI connectors: ``openai-batch`` (batches, async) and ``chatgpt`` (a chat completion, sync).

Both speak OpenAI's REST API over one shared httpx client (no ``openai`` package), with the
keys the operator gives each team (``plugins.openai``, see ``settings.py``).
"""

from connectors.openai.batch import OpenAIBatchConnector, OpenAIBatchMeta
from connectors.openai.chat import ChatGPTConnector
from connectors.openai.settings import OpenAIAccount, OpenAISettings

__all__ = ["ChatGPTConnector", "OpenAIAccount", "OpenAIBatchConnector", "OpenAIBatchMeta", "OpenAISettings"]
