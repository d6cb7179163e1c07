"""Typed models of the OCI specifications: parsing and validation, no I/O.

The *Open Container Initiative* (OCI) runtime specification describes a
container as a *bundle*: a directory with a ``config.json`` (what to run and
how to isolate it) and a root filesystem. A *runtime* (runc, crun,
``bulkhead-runtime``) turns a bundle into a running container and reports its
*state*. This package holds that vocabulary as data:

:mod:`bulkhead.oci.runtime_spec`  ``config.json`` (:class:`~bulkhead.oci.runtime_spec.Spec`
                                  and its parts), loading and validation
:mod:`bulkhead.oci.state`         the state document (``runc state``, hooks'
                                  stdin, the seccomp notify agent's message)
:mod:`bulkhead.oci.features`      the ``features`` document (what a runtime supports)
:mod:`bulkhead.oci.defaults`      the configuration ``runc spec`` writes

Nothing is imported here: the runtime imports exactly the modules it needs,
on every start, so this package stays cheap to import.
"""
