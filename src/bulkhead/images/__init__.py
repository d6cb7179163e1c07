"""Images: content store, references, registry client, layers, image store and archives.

An *image* is a tree of content-addressed blobs: a *manifest* (or an *index*
of manifests, one per platform) pointing by *digest* at an *image config*
and at *layers*, tar archives of filesystem changes applied one on top of
the other. The models of those documents live in :mod:`bulkhead.oci.image_spec`;
this package does the I/O:

:mod:`bulkhead.images.reference`  ``busybox`` -> ``docker.io/library/busybox:latest``
:mod:`bulkhead.images.content`    the content store: blobs by digest, verified on write
:mod:`bulkhead.images.registry`   the distribution-spec client: pull, push, resolve
:mod:`bulkhead.images.auth`       registry credentials and bearer tokens
:mod:`bulkhead.images.layer`      applying a layer to a directory, safely
:mod:`bulkhead.images.store`      images and tags (SQLite), unpacking into snapshots
:mod:`bulkhead.images.archive`    ``docker save``/``load`` archives and OCI layouts
:mod:`bulkhead.images.busybox`    the offline ``busybox:latest`` image

Nothing is imported here, so ``import bulkhead.images.reference`` stays cheap.
"""
