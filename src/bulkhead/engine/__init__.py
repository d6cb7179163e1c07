"""The container engine: containers as objects, and the OCI bundles it hands to the runtime."""
