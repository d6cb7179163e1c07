"""The ``bulkhead`` command line: Docker's verbs and flags on the Engine API.

``main`` dispatches a verb to its area module (containers, images, volumes,
system) which it imports only then; everything talks to the daemon through
:mod:`bulkhead.cli.client` (HTTP over the unix socket). Start-up stays lean:
the CLI never imports the engine, the runtime, the image store or msgspec.
"""
