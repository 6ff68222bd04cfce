"""Read a state dict saved in torch's legacy (pre-1.6, non-zip) format, without torch.

The file is a sequence of pickles followed by raw data:

1. the magic number ``0x1950a86a20f9469cfc6c``;
2. the protocol version (``1001``);
3. system information (byte order, C type sizes);
4. the object itself (here a state dict) whose tensors are rebuilt by
   ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and whose
   storages are persistent IDs ``("storage", <storage type>, key, location, numel,
   view_metadata)``;
5. the list of storage keys, in the order their data follows;
6. for each key, an int64 element count and then the raw elements.

Pickle runs code named by the file, so every pickle here is read with an unpickler that
resolves only the few names a state dict needs and refuses every other one with
:class:`~lfr_actors.errors.ModelFormatError`. The tensors come back as numpy arrays.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from lfr_actors.errors import ModelFormatError

__all__ = ["load_legacy_state_dict"]

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

# Storage class name -> numpy dtype (byte order applied later from the file's system info).
_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "f4",
    "DoubleStorage": "f8",
    "HalfStorage": "f2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "b1",
}


@dataclass(frozen=True)
class _StorageType:
    """Stands in for a ``torch.<X>Storage`` class named by the pickle."""

    name: str
    dtype: str


@dataclass
class _Storage:
    """A storage announced by a persistent ID; its data is read after the pickle."""

    key: str
    kind: _StorageType
    numel: int
    data: npt.NDArray[Any] | None = None


@dataclass(frozen=True)
class _StorageView:
    """A legacy view into another storage (``view_metadata`` in the persistent ID)."""

    root: _Storage
    offset: int
    numel: int


@dataclass
class _PendingTensor:
    """What ``_rebuild_tensor_v2`` returned: a tensor whose storage is not read yet."""

    storage: _Storage | _StorageView
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    extra: dict[str, Any] = field(default_factory=dict)


def _rebuild_tensor_v2(  # noqa: PLR0917 - pickle's REDUCE passes torch's positional arguments
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> _PendingTensor:
    if not isinstance(storage, _Storage | _StorageView):
        raise ModelFormatError(f"tensor rebuilt from {type(storage).__name__}, not a storage")
    if not _is_int_tuple(size) or not _is_int_tuple(stride) or not isinstance(storage_offset, int):
        raise ModelFormatError(
            f"tensor with malformed geometry: offset={storage_offset!r} size={size!r} "
            f"stride={stride!r}"
        )
    assert isinstance(size, tuple) and isinstance(stride, tuple)  # narrowed for mypy
    if len(size) != len(stride):
        raise ModelFormatError(f"tensor size {size} and stride {stride} differ in length")
    return _PendingTensor(storage, storage_offset, size, stride)


def _is_int_tuple(value: object) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names in ``allowed``; turns storage IDs into :class:`_Storage`."""

    def __init__(self, stream: io.BytesIO, allowed: dict[tuple[str, str], Any]) -> None:
        super().__init__(stream)
        self._allowed = allowed
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise ModelFormatError(
                f"refusing to load {module}.{name}: a torch state dict needs only tensors, "
                "storages and OrderedDict, so this file is not one (or is not safe to read)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise ModelFormatError(f"unsupported persistent ID in torch file: {pid!r:.200}")
        _, kind, key, _location, numel, view_metadata = pid
        if not isinstance(kind, _StorageType) or not isinstance(key, str):
            raise ModelFormatError(f"malformed storage ID in torch file: {pid!r:.200}")
        if not isinstance(numel, int) or numel < 0:
            raise ModelFormatError(f"storage {key!r} has an invalid element count {numel!r}")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, kind, numel)
        elif storage.kind != kind or storage.numel != numel:
            raise ModelFormatError(f"storage {key!r} is described twice, differently")
        if view_metadata is None:
            return storage
        if not (
            isinstance(view_metadata, tuple)
            and len(view_metadata) == 3
            and all(isinstance(v, int) for v in view_metadata[1:])
        ):
            raise ModelFormatError(f"malformed storage view in torch file: {view_metadata!r:.200}")
        _view_key, offset, view_size = view_metadata
        if offset < 0 or view_size < 0 or offset + view_size > numel:
            raise ModelFormatError(f"storage view {view_metadata!r} lies outside storage {key!r}")
        return _StorageView(storage, offset, view_size)


def _load_pickle(
    stream: io.BytesIO, what: str, allowed: dict[tuple[str, str], Any]
) -> tuple[Any, dict[str, _Storage]]:
    """The next pickle in ``stream`` and the storages its persistent IDs announced."""
    unpickler = _RestrictedUnpickler(stream, allowed)
    try:
        return unpickler.load(), unpickler.storages
    except ModelFormatError:
        raise
    except Exception as exc:  # pickle raises many unrelated types on corrupt input
        raise ModelFormatError(f"torch legacy file: cannot read the {what}: {exc}") from exc


def load_legacy_state_dict(data: bytes) -> dict[str, npt.NDArray[Any]]:
    """Read a torch legacy-format state dict from ``data``; return name -> numpy array.

    Arrays are native-endian copies in the tensor's shape and dtype (``FloatStorage``
    gives float32), in the order of the file. Raises :class:`ModelFormatError` for a file
    that is not a legacy torch file, names anything beyond tensors, storages and
    ``OrderedDict``, is truncated, or holds something other than a mapping of names to
    tensors.
    """
    if data[:4] == b"PK\x03\x04" and zipfile.is_zipfile(io.BytesIO(data)):
        raise ModelFormatError(
            "this is torch's zip serialisation (torch >= 1.6), not the legacy format this "
            "reader handles"
        )
    stream = io.BytesIO(data)
    no_globals: dict[tuple[str, str], Any] = {}
    magic, _ = _load_pickle(stream, "magic number", no_globals)
    if magic != _MAGIC_NUMBER:
        raise ModelFormatError("not a torch legacy file: wrong magic number")
    version, _ = _load_pickle(stream, "protocol version", no_globals)
    if version != _PROTOCOL_VERSION:
        raise ModelFormatError(f"unsupported torch legacy protocol version {version!r}")
    sys_info, _ = _load_pickle(stream, "system information", no_globals)
    if not isinstance(sys_info, dict):
        raise ModelFormatError("torch legacy file: the system information is not a dict")
    order = "<" if sys_info.get("little_endian", True) else ">"

    result, storages = _load_pickle(stream, "state dict", _ALLOWED_GLOBALS)
    keys, _ = _load_pickle(stream, "storage key list", no_globals)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ModelFormatError("torch legacy file: the storage key list is malformed")

    for key in keys:
        storage = storages.get(key)
        if storage is None:
            raise ModelFormatError(f"torch legacy file: data for unknown storage {key!r}")
        header = stream.read(8)
        if len(header) != 8:
            raise ModelFormatError(f"torch legacy file is truncated before storage {key!r}")
        (count,) = struct.unpack(order + "q", header)
        if count != storage.numel:
            raise ModelFormatError(
                f"storage {key!r}: {count} elements in the data, {storage.numel} announced"
            )
        dtype = np.dtype(order + storage.kind.dtype)
        raw = stream.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise ModelFormatError(f"torch legacy file is truncated inside storage {key!r}")
        storage.data = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))

    if not isinstance(result, dict):
        raise ModelFormatError(
            f"torch legacy file holds a {type(result).__name__}, not a state dict"
        )
    state: dict[str, npt.NDArray[Any]] = {}
    for name, value in result.items():
        if not isinstance(name, str) or not isinstance(value, _PendingTensor):
            raise ModelFormatError(
                f"torch legacy file: entry {name!r} is a {type(value).__name__}, not a tensor"
            )
        state[name] = _materialise(name, value)
    return state


def _materialise(name: str, tensor: _PendingTensor) -> npt.NDArray[Any]:
    """Copy the tensor's elements out of its storage, honouring offset and strides."""
    storage = tensor.storage
    base_offset = 0
    if isinstance(storage, _StorageView):
        base_offset, limit, storage = storage.offset, storage.numel, storage.root
    else:
        limit = storage.numel
    if storage.data is None:
        raise ModelFormatError(f"tensor {name!r}: its storage {storage.key!r} has no data")
    size, stride, offset = tensor.size, tensor.stride, tensor.offset
    if any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise ModelFormatError(f"tensor {name!r} has negative size, stride or offset")
    if 0 in size:
        return np.zeros(size, dtype=storage.data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= limit:
        raise ModelFormatError(
            f"tensor {name!r} (offset {offset}, size {size}, stride {stride}) reaches past "
            f"the end of its storage ({limit} elements)"
        )
    flat = storage.data[base_offset : base_offset + limit]
    contiguous = tuple(int(np.prod(size[i + 1 :])) for i in range(len(size)))
    if tuple(stride) == contiguous:
        count = int(np.prod(size))
        return flat[offset : offset + count].reshape(size).copy()
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
    )
    return np.ascontiguousarray(view)
