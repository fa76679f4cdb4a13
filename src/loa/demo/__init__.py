"""`loa demo`: a nationwide campaign over simulated carriers, watched live, then reconciled."""

from loa.demo.runner import DemoOptions, run_demo

__all__ = ["DemoOptions", "run_demo"]
