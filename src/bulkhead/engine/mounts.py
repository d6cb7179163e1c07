"""A container's volumes and bind mounts: Docker's ``-v``, ``--mount``, ``--volumes-from``.

Vocabulary
----------
*mount point*
    One place in the container where something from outside its image
    appears (moby's ``MountPoint``; ``inspect``'s ``Mounts`` lists them):
    a *bind* (a host path), a *volume* (a named or anonymous volume of the
    :class:`~bulkhead.engine.volumes.VolumeStore`) or a *tmpfs*
    (``--mount type=tmpfs``; ``--tmpfs`` is handled by the spec builder).
*bind spec* (``-v``, ``HostConfig.Binds``)
    ``SRC:DST[:MODE]`` where SRC is an absolute host path (a bind) or a
    volume name, or just ``DST`` (an anonymous volume). MODE is a comma
    list with at most one word of each kind: ``rw``/``ro`` (and Docker's
    ``ro-non-recursive``, ``ro-force-recursive``, ``rro``), ``z``/``Z``
    (SELinux relabel: accepted, no effect here), a propagation
    (``[r]private``, ``[r]slave``, ``[r]shared``), ``nocopy``, a
    consistency (``consistent``, ``cached``, ``delegated``: ignored on
    Linux, as Docker). A bind's host directory is created when missing (as
    Docker does for ``-v``, for backward compatibility).
*mount object* (``--mount``, ``HostConfig.Mounts``)
    The API's ``Mount`` JSON (``Type``, ``Source``, ``Target``,
    ``ReadOnly``, ``BindOptions``, ``VolumeOptions``, ``TmpfsOptions``),
    which the docker CLI builds from ``--mount type=...,src=...,dst=...``
    (:func:`parse_mount_flag` does the same). Stricter than ``-v``: a bind's
    source must exist (``bind source path does not exist``).
*volumes-from*
    ``CONTAINER[:ro|rw]``: every mount point of that container again, at
    the same destinations, read-only when asked (or when it was).
*image volumes*
    ``Config.Volumes`` (the image's ``VOLUME`` lines, and the docker CLI's
    ``-v /dst``): an anonymous volume for each destination nothing else
    mounts.
*copy-up*
    A volume that is empty when a container first mounts it gets the
    content the image has at that destination (owner and mode of the
    directory too), as Docker does at create; ``nocopy`` (``-v x:/d:nocopy``,
    ``volume-nocopy``) turns it off. Bind mounts never copy.

Precedence, as Docker's ``registerMountPoints``: ``--volumes-from`` first,
replaced at the same destination by ``-v`` or ``--mount`` (which must not
name a destination twice: ``Duplicate mount point``), then image volumes
where nothing else is mounted. In the OCI spec user mounts replace Docker's
default mounts at the same destination and are sorted by the depth of their
destination, so that ``/data`` is mounted before ``/data/logs``.

Errors are :class:`~bulkhead.errors.SpecError` (HTTP 400) with Docker's
wording (``invalid volume specification: '...'``, ``invalid mount config
for type "bind": ...``, ``No such container: x`` for a ``--volumes-from``
container that does not exist: a 400 as in Docker, since the docker CLI
reads a 404 from create as a missing image and tries to pull it).
"""

from __future__ import annotations

import contextlib
import csv
import os
import posixpath
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bulkhead.errors import BulkheadError, NoSuchContainer, SpecError

if TYPE_CHECKING:
    from bulkhead.engine.volumes import VolumeStore

# --- Docker's mode words ------------------------------------------------------------

RW_MODES = frozenset({"rw", "ro", "ro-non-recursive", "ro-force-recursive", "rro"})
LABEL_MODES = frozenset({"z", "Z"})
PROPAGATION_MODES = frozenset({"private", "rprivate", "slave", "rslave", "shared", "rshared"})
COPY_MODES = frozenset({"nocopy"})
CONSISTENCY_MODES = frozenset({"consistent", "cached", "delegated", "default"})
DEFAULT_PROPAGATION = "rprivate"

_MODE_KINDS = (RW_MODES, LABEL_MODES, PROPAGATION_MODES, COPY_MODES, CONSISTENCY_MODES)

MOUNT_TYPES = ("bind", "volume", "tmpfs")


def valid_mode(mode: str) -> bool:
    """Whether ``mode`` is a valid ``-v`` MODE (Docker's ``linuxValidMountMode``)."""
    if mode == "":
        return True
    counts = [0] * len(_MODE_KINDS)
    for word in mode.split(","):
        for i, kind in enumerate(_MODE_KINDS):
            if word in kind:
                counts[i] += 1
                break
        else:
            return False
    return all(c <= 1 for c in counts)


def _propagation_of(mode: str) -> str | None:
    for word in mode.split(","):
        if word in PROPAGATION_MODES:
            return word
    return None


def _invalid_spec(raw: str) -> str:
    return f"invalid volume specification: '{raw}'"


def _mount_config_error(mount_type: str, message: str) -> SpecError:
    return SpecError(f'invalid mount config for type "{mount_type}": {message}')


# --- the parsed form ------------------------------------------------------------------


@dataclass
class MountPoint:
    """One mount point, parsed and then resolved (moby's ``MountPoint``).

    ``source`` is the host path (for a volume: its mountpoint, once
    resolved); ``name`` the volume's name ("" until an anonymous one is
    made); ``mode`` the ``-v`` MODE as given (``inspect``'s ``Mode``);
    ``readonly_kind`` is ``"ro"`` (recursive when the kernel can: ``rro``),
    ``"ro-non-recursive"`` or ``"ro-force-recursive"``.
    """

    type: str
    destination: str
    source: str = ""
    name: str = ""
    rw: bool = True
    mode: str = ""
    propagation: str = ""
    driver: str = ""
    copy_data: bool = True
    create_source: bool = False  # a -v bind: make the host directory when missing
    readonly_kind: str = "ro"
    nonrecursive: bool = False
    subpath: str = ""
    volume_options: dict[str, str] = field(default_factory=dict)
    volume_labels: dict[str, str] = field(default_factory=dict)
    tmpfs_data: str = ""  # tmpfs: "ro,mode=1777,size=64m" (Docker's ConvertTmpfsOptions)
    from_container: bool = False  # came from --volumes-from (never copies up)

    def to_docker(self) -> dict[str, Any]:
        """``inspect``'s ``MountPoint`` object."""
        doc: dict[str, Any] = {"Type": self.type}
        if self.type == "volume":
            doc["Name"] = self.name
        doc["Source"] = self.source
        doc["Destination"] = self.destination
        if self.type == "volume":
            doc["Driver"] = self.driver or "local"
        doc["Mode"] = self.mode
        doc["RW"] = self.rw
        doc["Propagation"] = self.propagation
        return doc


def _clean_target(target: str) -> str:
    cleaned = posixpath.normpath(target.replace("\\", "/"))
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def _validate_target(mount_type: str, target: str) -> None:
    if not target:
        raise _mount_config_error(mount_type, "field Target must not be empty")
    cleaned = _clean_target(target)
    if cleaned == "/":
        raise _mount_config_error(mount_type, "invalid specification: destination can't be '/'")
    if not target.replace("\\", "/").startswith("/"):
        raise _mount_config_error(
            mount_type, f"invalid mount path: '{target}' mount path must be absolute"
        )


def parse_bind(raw: str) -> MountPoint:
    """One ``-v`` / ``HostConfig.Binds`` entry (Docker's ``ParseMountRaw``).

    Nothing is checked against the host here: a bind's source need not exist
    (it is created), a volume's name is checked when the volume is made.
    """
    parts = raw.split(":", 3)
    if parts[0] == "":
        raise SpecError(_invalid_spec(raw))
    source = target = mode = ""
    if len(parts) == 1:
        target = parts[0]
    elif len(parts) == 2:
        if valid_mode(parts[1]):
            raise SpecError(_invalid_spec(raw))  # "/foo:rw": a mode but no destination
        source, target = parts
    elif len(parts) == 3:
        source, target, mode = parts
    else:
        raise SpecError(_invalid_spec(raw))
    if not valid_mode(mode):
        raise SpecError(f"invalid mode: {mode}")
    mount_type = "bind" if source.startswith("/") else "volume"
    words = mode.split(",") if mode else []
    rw_words = [w for w in words if w in RW_MODES]
    readonly = bool(rw_words) and rw_words[0] != "rw"
    try:
        _validate_target(mount_type, target)
        if mount_type == "bind" and "nocopy" in words:
            raise _mount_config_error(mount_type, "field VolumeOptions must not be specified")
        if mount_type == "volume" and _propagation_of(mode):
            raise _mount_config_error(mount_type, "field BindOptions must not be specified")
        if mount_type == "volume" and readonly and not source:
            raise _mount_config_error(
                mount_type, "must not set ReadOnly mode when using anonymous volumes"
            )
    except SpecError as exc:
        raise SpecError(f"{_invalid_spec(raw)}: {exc}") from None
    mp = MountPoint(
        type=mount_type,
        destination=_clean_target(target),
        rw=not readonly,
        mode=mode,
        readonly_kind=_readonly_kind(rw_words[0] if rw_words else "rw"),
    )
    if mount_type == "bind":
        mp.source = posixpath.normpath(source)
        mp.propagation = _propagation_of(mode) or DEFAULT_PROPAGATION
        mp.create_source = True
    else:
        mp.name = source
        mp.copy_data = "nocopy" not in words
        if source and not mode:
            mp.mode = "z"  # Docker's setBindModeIfNull for local-driver volumes
    return mp


def _readonly_kind(word: str) -> str:
    if word == "ro-non-recursive":
        return "ro-non-recursive"
    if word in ("ro-force-recursive", "rro"):
        return "ro-force-recursive"
    return "ro"


def _opt_dict(doc: Any, where: str) -> dict[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise SpecError(f"invalid {where}: must be an object")
    return doc


def _str_map(doc: Any, where: str) -> dict[str, str]:
    value = _opt_dict(doc, where)
    if not all(isinstance(v, str) for v in value.values()):
        raise SpecError(f"invalid {where}: values must be strings")
    return {str(k): str(v) for k, v in value.items()}


def convert_tmpfs_options(opts: Mapping[str, Any], readonly: bool) -> str:
    """``TmpfsOptions`` as mount data (Docker's ``ConvertTmpfsOptions``): ``ro,mode=1777,size=64m``."""
    words: list[str] = []
    if readonly:
        words.append("ro")
    mode = opts.get("Mode") or 0
    if not isinstance(mode, int) or mode < 0:
        raise SpecError(f"invalid TmpfsOptions.Mode: {mode!r}")
    if mode:
        words.append(f"mode={mode:o}")
    size = opts.get("SizeBytes") or 0
    if not isinstance(size, int) or size < 0:
        raise SpecError(f"invalid TmpfsOptions.SizeBytes: {size!r}")
    if size:
        for suffix, divisor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % divisor == 0:
                words.append(f"size={size // divisor}{suffix}")
                break
        else:
            words.append(f"size={size}")
    for opt in opts.get("Options") or []:
        if not isinstance(opt, list) or not 1 <= len(opt) <= 2:
            raise SpecError("invalid option array length")
        if opt[0] not in ("exec", "noexec"):
            raise SpecError(f"invalid option: {opt[0]}")
        words.append(opt[0] if len(opt) == 1 else f"{opt[0]}={opt[1]}")
    return ",".join(words)


def parse_mount(doc: Mapping[str, Any], *, check_source: bool = True) -> MountPoint:
    """One ``HostConfig.Mounts`` object (Docker's ``ParseMountSpec`` and its validation).

    ``check_source``: a bind's source must exist unless
    ``BindOptions.CreateMountpoint`` (Docker checks it at create).
    """
    if not isinstance(doc, Mapping):
        raise SpecError("invalid HostConfig.Mounts entry: must be an object")
    mount_type = doc.get("Type") or ""
    target = doc.get("Target") or ""
    source = doc.get("Source") or ""
    readonly = bool(doc.get("ReadOnly"))
    bind_opts = doc.get("BindOptions")
    vol_opts = doc.get("VolumeOptions")
    tmpfs_opts = doc.get("TmpfsOptions")
    if not isinstance(target, str) or not isinstance(source, str):
        raise SpecError("invalid HostConfig.Mounts entry: Source and Target must be strings")
    if mount_type not in MOUNT_TYPES:
        if mount_type == "image":
            raise _mount_config_error(mount_type, "image mounts are not supported")
        raise _mount_config_error(str(mount_type), "mount type unknown")
    _validate_target(mount_type, target)
    mp = MountPoint(type=mount_type, destination=_clean_target(target), rw=not readonly)
    if mount_type == "bind":
        if not source:
            raise _mount_config_error(mount_type, "field Source must not be empty")
        if vol_opts is not None:
            raise _mount_config_error(mount_type, "field VolumeOptions must not be specified")
        b = _opt_dict(bind_opts, "BindOptions")
        propagation = b.get("Propagation") or ""
        if propagation and propagation not in PROPAGATION_MODES:
            raise _mount_config_error(mount_type, f"invalid propagation mode: {propagation}")
        if not source.startswith("/"):
            raise _mount_config_error(
                mount_type, f"invalid mount path: '{source}' mount path must be absolute"
            )
        create = bool(b.get("CreateMountpoint"))
        if check_source and not create and not os.path.lexists(source):
            raise _mount_config_error(mount_type, f"bind source path does not exist: {source}")
        mp.source = posixpath.normpath(source)
        mp.propagation = propagation or DEFAULT_PROPAGATION
        mp.create_source = create
        mp.nonrecursive = bool(b.get("NonRecursive"))
        if b.get("ReadOnlyNonRecursive"):
            mp.readonly_kind = "ro-non-recursive"
        elif b.get("ReadOnlyForceRecursive"):
            mp.readonly_kind = "ro-force-recursive"
    elif mount_type == "volume":
        if bind_opts is not None:
            raise _mount_config_error(mount_type, "field BindOptions must not be specified")
        v = _opt_dict(vol_opts, "VolumeOptions")
        subpath = v.get("Subpath") or ""
        if subpath:
            if not source:
                raise _mount_config_error(
                    mount_type, "must not set Subpath when using anonymous volumes"
                )
            norm = posixpath.normpath(subpath)
            if subpath.startswith("/") or norm == ".." or norm.startswith("../"):
                raise _mount_config_error(
                    mount_type, "subpath must be a relative path within the volume"
                )
        if readonly and not source:
            raise _mount_config_error(
                mount_type, "must not set ReadOnly mode when using anonymous volumes"
            )
        driver_cfg = _opt_dict(v.get("DriverConfig"), "VolumeOptions.DriverConfig")
        mp.name = source
        mp.subpath = subpath
        mp.copy_data = not v.get("NoCopy")
        mp.driver = driver_cfg.get("Name") or ""
        mp.volume_options = _str_map(
            driver_cfg.get("Options"), "VolumeOptions.DriverConfig.Options"
        )
        mp.volume_labels = _str_map(v.get("Labels"), "VolumeOptions.Labels")
    else:  # tmpfs
        if bind_opts is not None:
            raise _mount_config_error(mount_type, "field BindOptions must not be specified")
        if source:
            raise _mount_config_error(mount_type, "field Source must not be specified")
        try:
            mp.tmpfs_data = convert_tmpfs_options(_opt_dict(tmpfs_opts, "TmpfsOptions"), readonly)
        except SpecError as exc:
            raise _mount_config_error(mount_type, str(exc)) from None
    return mp


def parse_volumes_from(spec: str) -> tuple[str, str]:
    """``CONTAINER[:MODE]`` → ``(container, mode)``, mode ``rw`` by default (Docker's rules)."""
    if not spec:
        raise SpecError("volumes-from specification cannot be an empty string")
    ref, _, mode = spec.partition(":")
    if not mode:
        return ref, "rw"
    if not valid_mode(mode):
        raise SpecError(f"invalid mode: {mode}")
    words = mode.split(",")
    if any(w in PROPAGATION_MODES or w in COPY_MODES for w in words):
        raise SpecError(f"invalid mode: {mode}")
    return ref, mode


# --- the docker CLI's --mount syntax -------------------------------------------------

_TRUE_WORDS = frozenset({"1", "true", "True", "TRUE", "t", "T"})
_FALSE_WORDS = frozenset({"0", "false", "False", "FALSE", "f", "F"})


def _flag_bool(key: str, value: str | None) -> bool:
    if value is None:
        return True
    if value in _TRUE_WORDS:
        return True
    if value in _FALSE_WORDS:
        return False
    raise SpecError(f"invalid value for '{key}': {value}", where="--mount")


def parse_mount_flag(text: str) -> dict[str, Any]:
    """``--mount type=bind,src=/a,dst=/b,readonly`` → the API's ``Mount`` object.

    The docker CLI's syntax (a CSV line of ``key=value`` fields; ``type``
    defaults to ``volume``): ``source``/``src``, ``target``/``destination``/
    ``dst``, ``readonly``/``ro`` (optionally ``=true|false``),
    ``bind-propagation``, ``bind-nonrecursive``, ``bind-create-mountpoint``,
    ``volume-driver``, ``volume-label=k=v``, ``volume-opt=k=v``,
    ``volume-nocopy``, ``volume-subpath``, ``tmpfs-size`` (bytes or 64m),
    ``tmpfs-mode`` (octal), ``consistency`` (ignored).
    """
    from bulkhead.engine.options import parse_memory

    fields = next(csv.reader([text]), [])
    out: dict[str, Any] = {"Type": "volume"}
    bind: dict[str, Any] = {}
    volume: dict[str, Any] = {}
    tmpfs: dict[str, Any] = {}
    for f in fields:
        key, sep, value_s = f.partition("=")
        key = key.strip().lower()
        value: str | None = value_s if sep else None
        if value is None and key not in (
            "readonly", "ro", "volume-nocopy", "bind-nonrecursive", "bind-create-mountpoint"
        ):  # fmt: skip
            raise SpecError(f"invalid field '{f}' must be a key=value pair", where="--mount")
        if key == "type":
            out["Type"] = value
        elif key in ("source", "src"):
            out["Source"] = value
        elif key in ("target", "dst", "destination"):
            out["Target"] = value
        elif key in ("readonly", "ro"):
            out["ReadOnly"] = _flag_bool(key, value)
        elif key == "consistency":
            out["Consistency"] = value
        elif key == "bind-propagation":
            bind["Propagation"] = value
        elif key == "bind-nonrecursive":
            bind["NonRecursive"] = _flag_bool(key, value)
        elif key == "bind-create-mountpoint":
            bind["CreateMountpoint"] = _flag_bool(key, value)
        elif key == "volume-nocopy":
            volume["NoCopy"] = _flag_bool(key, value)
        elif key == "volume-subpath":
            volume["Subpath"] = value
        elif key == "volume-driver":
            volume.setdefault("DriverConfig", {})["Name"] = value
        elif key in ("volume-label", "volume-opt"):
            k, _, v = (value or "").partition("=")
            if key == "volume-label":
                volume.setdefault("Labels", {})[k] = v
            else:
                volume.setdefault("DriverConfig", {}).setdefault("Options", {})[k] = v
        elif key == "tmpfs-size":
            tmpfs["SizeBytes"] = parse_memory(value or "", "--mount tmpfs-size")
        elif key == "tmpfs-mode":
            try:
                tmpfs["Mode"] = int(value or "", 8)
            except ValueError:
                raise SpecError(f"invalid value for tmpfs-mode: {value}", where="--mount") from None
        else:
            raise SpecError(f"unexpected key '{key}' in '{f}'", where="--mount")
    if not out.get("Type"):
        raise SpecError("type is required", where="--mount")
    if not out.get("Target"):
        raise SpecError("target is required", where="--mount")
    kind = out["Type"]
    for opts, prefix, owner in ((bind, "bind", "BindOptions"), (volume, "volume", "VolumeOptions"),
                                (tmpfs, "tmpfs", "TmpfsOptions")):  # fmt: skip
        if opts:
            if kind != prefix:
                raise SpecError(
                    f"cannot mix '{prefix}-*' options with mount type '{kind}'", where="--mount"
                )
            out[owner] = opts
    return out


# --- resolving a container's mounts --------------------------------------------------


class MountedContainer(Protocol):
    """What ``--volumes-from`` needs of another container."""

    @property
    def id(self) -> str: ...

    @property
    def mount_points(self) -> list[dict[str, Any]]: ...


LookupContainer = Callable[[str], MountedContainer]


@dataclass
class ResolvedMounts:
    """What :func:`resolve_mounts` made of a container's mount options.

    ``oci_mounts``        config.json ``mounts`` entries, sorted by destination depth
    ``volumes_used``      the volumes the container now holds a reference to
    ``mount_points``      ``inspect``'s ``Mounts`` (persist them: ``--volumes-from`` reads them)
    ``rootfs_propagation``  ``linux.rootfsPropagation`` a shared/slave bind needs, else None
    ``tmpfs_destinations``  ``HostConfig.Tmpfs`` destinations (sorted with the user mounts)
    ``volumes_created``   the volumes made for this container (anonymous ones included)
    """

    oci_mounts: list[dict[str, Any]] = field(default_factory=list)
    volumes_used: list[str] = field(default_factory=list)
    mount_points: list[dict[str, Any]] = field(default_factory=list)
    rootfs_propagation: str | None = None
    tmpfs_destinations: list[str] = field(default_factory=list)
    volumes_created: list[str] = field(default_factory=list)


def _depth(destination: str) -> int:
    return posixpath.normpath(destination).count("/")


def _oci_mount(mp: MountPoint) -> dict[str, Any]:
    if mp.type == "tmpfs":
        words = ["noexec", "nosuid", "nodev", DEFAULT_PROPAGATION]
        if mp.tmpfs_data:
            words += mp.tmpfs_data.split(",")
        return {
            "destination": mp.destination,
            "type": "tmpfs",
            "source": "tmpfs",
            "options": merge_tmpfs_options(words),
        }
    opts = ["bind" if mp.nonrecursive else "rbind"]
    if not mp.rw:
        if mp.readonly_kind == "ro-non-recursive" or mp.nonrecursive:
            opts.append("ro")
        else:
            opts.append("rro")
    if mp.propagation:
        opts.append(mp.propagation)
    return {"destination": mp.destination, "type": "bind", "source": mp.source, "options": opts}


def merge_tmpfs_options(words: list[str]) -> list[str]:
    """Docker's ``MergeTmpfsOptions``: a later flag wins over an earlier one of the same bit.

    ``exec`` after ``noexec`` leaves ``exec``; one propagation word; one
    value per ``key=`` (the last).
    """
    from bulkhead.linux.mount import MOUNT_FLAGS

    seen_flags: set[int] = set()
    seen_data: set[str] = set()
    out: list[str] = []
    for word in reversed(words):
        if word == "defaults":
            continue
        flag = MOUNT_FLAGS.get(word)
        if word in PROPAGATION_MODES:
            key = -1
        elif flag is not None:
            key = flag[1]
        else:
            key = None
        if key is not None:
            if key not in seen_flags:
                seen_flags.add(key)
                out.insert(0, word)
            continue
        name, sep, _ = word.partition("=")
        if not sep:
            raise SpecError(f"invalid tmpfs option {word!r}")
        if name not in seen_data:
            seen_data.add(name)
            out.insert(0, word)
    return out


def _in_rootfs(rootfs: str, destination: str) -> str:
    from bulkhead.runtime.securejoin import secure_join

    return secure_join(rootfs, destination)


def copy_up(rootfs: str, destination: str, volume_path: str) -> bool:
    """Copy the image's content at ``destination`` into an empty volume; whether it did.

    Nothing is copied when the volume is not empty (the copy happens once, on
    first use) or the image has no directory there. The volume's own
    directory takes the owner and mode of the image's directory, as Docker's
    copy does. The path is resolved inside ``rootfs`` (symlinks cannot lead
    out of it) and the copy keeps symlinks as symlinks (``cp -a``).
    """
    try:
        if any(True for _ in os.scandir(volume_path)):
            return False
    except FileNotFoundError:
        return False
    src = _in_rootfs(rootfs, destination)
    try:
        st = os.lstat(src)
    except OSError:
        return False
    import stat as stat_mod

    if not stat_mod.S_ISDIR(st.st_mode):
        return False
    proc = subprocess.run(
        ["cp", "-a", "--", src + "/.", volume_path + "/"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BulkheadError(
            f"copying the image's {destination} into the volume failed: {proc.stderr.strip()}"
        )
    os.chown(volume_path, st.st_uid, st.st_gid)
    os.chmod(volume_path, stat_mod.S_IMODE(st.st_mode))
    return True


def _from_inspect(doc: Mapping[str, Any], mode: str) -> MountPoint | None:
    """A mount point of another container, for ``--volumes-from``."""
    mount_type = doc.get("Type") or ""
    if mount_type not in ("bind", "volume"):
        return None  # tmpfs: nothing to share
    rw_words = [w for w in mode.split(",") if w in RW_MODES]
    rw_asked = not rw_words or rw_words[0] == "rw"
    return MountPoint(
        type=mount_type,
        destination=str(doc.get("Destination") or ""),
        source=str(doc.get("Source") or ""),
        name=str(doc.get("Name") or ""),
        rw=bool(doc.get("RW", True)) and rw_asked,
        mode="",
        propagation=str(doc.get("Propagation") or ""),
        driver=str(doc.get("Driver") or ""),
        copy_data=False,
        from_container=True,
    )


def resolve_mounts(
    host_config: Mapping[str, Any],
    volumes: Mapping[str, Any] | None,
    container_id: str,
    rootfs: str | None,
    volume_store: VolumeStore,
    lookup_container: LookupContainer | None = None,
) -> ResolvedMounts:
    """Turn a container's ``Binds``, ``Mounts``, ``VolumesFrom`` and ``Config.Volumes`` into mounts.

    Named volumes are made when missing (``-v data:/d`` as in Docker),
    anonymous ones for ``Config.Volumes`` (``volumes``: the image's and the
    CLI's ``-v /dst``) and for volume mounts without a name. The container
    takes a reference on every volume it mounts (``volume_store.use``);
    when ``rootfs`` (the container's root filesystem, mounted) is given,
    empty volumes get the image's content (copy-up). On any error what was
    taken and made is given back, and the error raised.
    """
    tmpfs = host_config.get("Tmpfs") or {}
    if not isinstance(tmpfs, Mapping):
        raise SpecError("invalid HostConfig.Tmpfs: must be an object")
    tmpfs_dests = {_clean_target(str(k)) for k in tmpfs}
    points: dict[str, MountPoint] = {}
    user_dests: set[str] = set()

    binds = host_config.get("Binds") or []
    mounts = host_config.get("Mounts") or []
    from_specs = host_config.get("VolumesFrom") or []
    for what, value in (("Binds", binds), ("Mounts", mounts), ("VolumesFrom", from_specs)):
        if not isinstance(value, list):
            raise SpecError(f"invalid HostConfig.{what}: must be an array")

    parsed_binds = [parse_bind(str(b)) for b in binds]
    volume_driver = host_config.get("VolumeDriver") or ""
    for mp in parsed_binds:
        if mp.type == "volume":
            mp.driver = str(volume_driver)
    parsed_mounts = [parse_mount(m) for m in mounts]
    for mp in parsed_binds + parsed_mounts:
        if mp.destination in user_dests or mp.destination in tmpfs_dests:
            raise SpecError(f"Duplicate mount point: {mp.destination}")
        user_dests.add(mp.destination)

    for spec in from_specs:
        ref, mode = parse_volumes_from(str(spec))
        if lookup_container is None:
            raise SpecError("--volumes-from is not available here")
        try:
            other = lookup_container(ref)
        except NoSuchContainer as exc:
            # a 400, not a 404: the docker CLI takes a 404 on create for a missing image
            raise SpecError(str(exc)) from None
        for doc in other.mount_points:
            inherited = _from_inspect(doc, mode)
            if inherited is None or inherited.destination in user_dests:
                continue
            points[inherited.destination] = inherited
    for mp in parsed_binds + parsed_mounts:
        points[mp.destination] = mp
    for dest in volumes or {}:
        cleaned = _clean_target(str(dest))
        if cleaned in points or cleaned in tmpfs_dests:
            continue
        try:
            _validate_target("volume", str(dest))
        except SpecError as exc:
            raise SpecError(f"{_invalid_spec(str(dest))}: {exc}") from None
        points[cleaned] = MountPoint(type="volume", destination=cleaned)

    result = ResolvedMounts(tmpfs_destinations=sorted(tmpfs_dests))
    try:
        _realize(points, container_id, rootfs, volume_store, result)
    except BaseException:
        undo(result, container_id, volume_store)
        raise
    ordered = sorted(points.values(), key=lambda m: _depth(m.destination))
    result.oci_mounts = [_oci_mount(mp) for mp in ordered]
    result.mount_points = [
        mp.to_docker() for mp in sorted(points.values(), key=lambda m: m.destination)
    ]
    result.rootfs_propagation = _rootfs_propagation(ordered)
    return result


def _realize(
    points: dict[str, MountPoint],
    container_id: str,
    rootfs: str | None,
    store: VolumeStore,
    result: ResolvedMounts,
) -> None:
    for mp in sorted(points.values(), key=lambda m: _depth(m.destination)):
        if mp.type == "bind":
            if mp.create_source and not os.path.lexists(mp.source):
                try:
                    os.makedirs(mp.source, mode=0o755, exist_ok=True)
                except OSError as exc:
                    raise BulkheadError(
                        f"error while creating mount source path '{mp.source}': {exc.strerror}"
                    ) from None
            continue
        if mp.type != "volume":
            continue
        existed = bool(mp.name) and store.exists(mp.name)
        if mp.from_container and not existed:
            from bulkhead.errors import NoSuchVolume

            raise NoSuchVolume(f"get {mp.name}: no such volume")
        if not existed:
            if rootfs is not None and mp.copy_data and not mp.name:
                _check_not_file(rootfs, mp.destination)
            vol = store.create(
                mp.name or None,
                driver=mp.driver or "local",
                driver_opts=mp.volume_options,
                labels=mp.volume_labels,
                anonymous=not mp.name,
            )
            result.volumes_created.append(vol.name)
        else:
            vol = store.get(mp.name)
        mp.name = vol.name
        mp.driver = vol.driver
        mountpoint = store.use(vol.name, container_id)
        result.volumes_used.append(vol.name)
        mp.source = mountpoint
        if mp.subpath:
            mp.source = _subpath(mountpoint, mp.subpath)
        elif rootfs is not None and mp.copy_data and not mp.from_container:
            copy_up(rootfs, mp.destination, mountpoint)


def _check_not_file(rootfs: str, destination: str) -> None:
    path = _in_rootfs(rootfs, destination)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise SpecError(f"cannot mount volume over existing file, file exists {path}")


def _subpath(mountpoint: str, subpath: str) -> str:
    from bulkhead.runtime.securejoin import secure_join

    path = secure_join(mountpoint, subpath)
    if not os.path.exists(path):
        raise SpecError(f"cannot access path {path}: volume subpath does not exist: {subpath}")
    return path


def _rootfs_propagation(mps: list[MountPoint]) -> str | None:
    shared = slave = False
    for mp in mps:
        if mp.type != "bind":
            continue
        if mp.propagation in ("shared", "rshared"):
            shared = True
        elif mp.propagation in ("slave", "rslave"):
            slave = True
    if shared:
        return "rshared"
    if slave:
        return "rslave"
    return None


def undo(resolved: ResolvedMounts, container_id: str, volume_store: VolumeStore) -> None:
    """Give back what :func:`resolve_mounts` took and made (a create that failed later).

    The references are dropped and the anonymous volumes made for the
    container removed; a named volume made on the way stays, as in Docker.
    """
    for name in resolved.volumes_used:
        with contextlib.suppress(BulkheadError, OSError):
            volume_store.release(name, container_id)
    for name in resolved.volumes_created:
        with contextlib.suppress(BulkheadError, OSError):
            if volume_store.get(name).anonymous and not volume_store.refs(name):
                volume_store.remove(name)
    resolved.volumes_used.clear()
    resolved.volumes_created.clear()


def apply_to_spec(spec: dict[str, Any], resolved: ResolvedMounts) -> dict[str, Any]:
    """Put ``resolved``'s mounts into an OCI ``spec`` (from ``build_spec``); returns ``spec``.

    As Docker's ``WithMounts``: a default mount at a destination a user
    mount takes is dropped (all of ``/dev/...`` when ``/dev`` itself is
    mounted); the user mounts and the ``--tmpfs`` mounts are then appended
    together, sorted by the depth of their destination (stable), so that a
    parent is always mounted before what is mounted inside it.
    """
    user = {m["destination"] for m in resolved.oci_mounts}
    tmpfs = set(resolved.tmpfs_destinations)
    over_dev = "/dev" in user
    defaults: list[dict[str, Any]] = []
    extra: list[dict[str, Any]] = []
    for m in spec.get("mounts", []):
        dest = m.get("destination", "")
        if dest in user or (over_dev and dest.startswith("/dev/")):
            continue
        if dest in tmpfs:
            extra.append(m)
        else:
            defaults.append(m)
    extra += resolved.oci_mounts
    extra.sort(key=lambda m: _depth(m["destination"]))
    spec["mounts"] = defaults + extra
    if resolved.rootfs_propagation:
        linux = spec.setdefault("linux", {})
        current = linux.get("rootfsPropagation")
        if resolved.rootfs_propagation == "rshared" or current not in ("shared", "rshared"):
            linux["rootfsPropagation"] = resolved.rootfs_propagation
    return spec


# --- a container's files as its processes see them (docker cp) ----------------------


@contextlib.contextmanager
def rootfs_with_volumes(rootfs: str, mount_points: list[dict[str, Any]]) -> Iterator[str]:
    """A private view of ``rootfs`` with the container's volumes and binds mounted in it.

    For ``docker cp`` (``/containers/{id}/archive``): a path under a volume
    must read and write the volume, as in Docker, not the image layer
    hidden below it. ``mount_points`` are ``inspect``'s ``Mounts`` (those
    :func:`resolve_mounts` returned); tmpfs mounts live only inside the
    container and are not there (Docker neither). Without a bind or volume
    the rootfs itself is yielded.

    The view is a recursive clone of the rootfs mount attached at a new
    directory next to it and made private at once, so that nothing mounted
    in it shows up elsewhere: not in the host's mount table beyond the view,
    and not in a running container whose root is the same mount. Each
    volume is cloned (``open_tree``), made read-only when the mount point
    is, and moved onto its destination opened inside the view with
    ``O_NOFOLLOW`` on every component (a symlink in the image cannot send
    it out of the view). The view is detached and removed afterwards.
    Needs root.
    """
    shared = [
        m
        for m in mount_points
        if m.get("Type") in ("bind", "volume") and m.get("Source") and m.get("Destination")
    ]
    if not shared:
        yield rootfs
        return
    import tempfile

    from bulkhead.linux import mount as lm
    from bulkhead.runtime.securejoin import open_in_root

    parent = os.path.dirname(os.path.normpath(rootfs))
    view = tempfile.mkdtemp(prefix=".view-", dir=parent)
    attached = False
    try:
        tree = lm.open_tree(rootfs, lm.OPEN_TREE_CLONE | lm.AT_RECURSIVE)
        try:
            lm.move_mount(tree, view)
        finally:
            os.close(tree)
        attached = True
        lm.make_propagation(view, lm.MS_PRIVATE | lm.MS_REC)
        for m in sorted(shared, key=lambda m: _depth(str(m["Destination"]))):
            source = str(m["Source"])
            try:
                is_dir = os.path.isdir(source)
            except OSError:
                continue
            if not os.path.exists(source):
                continue
            target_fd, _ = open_in_root(
                view, str(m["Destination"]), create="dir" if is_dir else "file"
            )
            try:
                clone = lm.open_tree(source, lm.OPEN_TREE_CLONE | lm.AT_RECURSIVE)
                try:
                    if not m.get("RW", True):
                        lm.mount_setattr(
                            "",
                            lm.MOUNT_ATTR_RDONLY,
                            recursive=True,
                            dirfd=clone,
                            flags=lm.AT_EMPTY_PATH,
                        )
                    lm.move_mount(
                        clone,
                        "",
                        to_dirfd=target_fd,
                        flags=lm.MOVE_MOUNT_F_EMPTY_PATH | lm.MOVE_MOUNT_T_EMPTY_PATH,
                    )
                finally:
                    os.close(clone)
            finally:
                os.close(target_fd)
        yield view
    finally:
        if attached:
            with contextlib.suppress(OSError):
                lm.umount2(view, lm.MNT_DETACH)
        with contextlib.suppress(OSError):
            os.rmdir(view)
