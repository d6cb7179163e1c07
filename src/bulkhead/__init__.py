"""bulkhead: a container engine for Linux, written in Python.

Packages, top to bottom (see DESIGN.md): ``runtime`` (the OCI runtime,
``bulkhead-runtime``), ``cgroups``, ``oci`` (spec models, no I/O) and
``linux`` (the only place that calls libc through ctypes).
"""

__version__ = "0.1.0"
