"""Trainyard's top floor: the `trainyard` command, the HTTP client, and local_service (start the
service's processes on this machine). Settings live on the ground floor, in core/."""

__version__ = "0.1.0"
