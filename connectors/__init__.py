"""Connectors bundled with the service; each registers through the ``flyte.connectors`` entry points."""
