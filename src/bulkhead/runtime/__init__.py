"""The OCI runtime: a bundle (config.json + rootfs) in, an isolated process out.

``bulkhead-runtime`` (see :mod:`bulkhead.runtime.cli`) is runc-compatible, so
containerd, Podman and Kubernetes can drive it. This package knows nothing
about images, networks or the daemon.
"""
