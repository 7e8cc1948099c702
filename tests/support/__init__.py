"""Helpers shared by every test suite: real processes on free ports, and the doubles."""

from support.process import Process, free_port, missing, running, wait_for_url

__all__ = ["Process", "free_port", "missing", "running", "wait_for_url"]
