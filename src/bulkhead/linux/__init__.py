"""Thin, typed wrappers over Linux system calls.

This package is the only place in bulkhead that uses :mod:`ctypes`. Every
wrapper raises :class:`OSError` carrying ``errno`` and, where one is involved,
the path, exactly like the functions of :mod:`os` do. Where the standard
library already has the call (``os.setresuid``, ``socket.sethostname``,
``resource.prlimit``, ``os.pidfd_open`` ...) we use it and do not wrap it here.

Modules, one concept each:

``libc``          loading libc and turning ``-1``/``errno`` into ``OSError``
``namespaces``    unshare, setns, the CLONE_* flags, id maps, time offsets
``mount``         mount, umount2, pivot_root, mount flags and option parsing
``capabilities``  capability names and numbers, capset, bounding and ambient sets
``seccomp``       compiling a seccomp profile to BPF with libseccomp, loading it
``process``       prctl and friends: no_new_privs, dumpable, subreaper, keyrings
``terminal``      pseudo-terminals inside a container and passing fds
``dmz``           the sealed exec trampoline that keeps the host interpreter safe
"""
