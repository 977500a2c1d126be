"""Dockyard: self-hosted cloud development environments."""

__version__ = "0.1.0"
