"""Trainyard: the `trainyard` command, the HTTP client, and the settings every process shares."""

__version__ = "0.1.0"
