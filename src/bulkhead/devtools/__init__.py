"""Tools for developers and tests: offline images and bundles built from the host."""
