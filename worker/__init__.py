"""modstream worker: the Kafka service (config, stages, judges, CLI)."""

__version__ = "0.1.0"
