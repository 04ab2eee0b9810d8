"""Reading torch.distributed.checkpoint (DCP) folders without running code from them.

DCP itself unpickles two things with the full pickle machinery, so a crafted checkpoint file could run
any command on `train --resume`:

- the `.metadata` file (`FileSystemReader.read_metadata` calls `pickle.load`);
- every non-tensor value in the `.distcp` shards, e.g. the optimizer's hyper-parameters
  (`DefaultLoadPlanner.load_bytes` calls `torch.load(weights_only=False)`).

`SafeFileSystemReader` reads `.metadata` with an unpickler that only builds the classes DCP metadata is
made of (`METADATA_CLASSES`, measured on this project's own saves: model + AdamW + EMA, one process and
FSDP2 over two); `SafeLoadPlanner` reads non-tensor values with `torch.load(weights_only=True)`, which
builds only tensors and plain containers. Tensors themselves DCP already reads with
`weights_only=True`. Anything else is refused with `UnsafeCheckpointError`, naming the file.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

_METADATA_MODULE = "torch.distributed.checkpoint.metadata"
METADATA_CLASSES = frozenset(
    {
        (_METADATA_MODULE, "Metadata"),
        (_METADATA_MODULE, "MetadataIndex"),
        (_METADATA_MODULE, "StorageMeta"),
        (_METADATA_MODULE, "TensorProperties"),
        (_METADATA_MODULE, "TensorStorageMetadata"),
        (_METADATA_MODULE, "ChunkStorageMetadata"),
        (_METADATA_MODULE, "BytesStorageMetadata"),
        (_METADATA_MODULE, "_MEM_FORMAT_ENCODING"),
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),
        ("pathlib", "PosixPath"),
        ("pathlib", "WindowsPath"),
        ("collections", "OrderedDict"),
    }
)


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """A checkpoint file asks to build something a checkpoint never holds."""


def _is_torch_dtype(module: str, name: str) -> bool:
    return module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)


class _MetadataUnpickler(pickle.Unpickler):
    """Builds DCP metadata objects and nothing else."""

    def __init__(self, file, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in METADATA_CLASSES or _is_torch_dtype(module, name):
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"{self.source} asks to build {module}.{name}, which DCP checkpoint metadata never holds; "
            "refusing to load it (the file was not written by a kaleido-s2v trainer, or was altered)"
        )


class SafeFileSystemReader(FileSystemReader):
    """`FileSystemReader` whose `.metadata` is read with the allow-listed unpickler."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as stream:
            try:
                metadata = _MetadataUnpickler(stream, str(path)).load()
            except UnsafeCheckpointError:
                raise
            except Exception as error:  # truncated or not a pickle at all
                raise ValueError(f"{path} is not readable DCP checkpoint metadata: {error}") from error
        if not isinstance(metadata, Metadata):
            raise UnsafeCheckpointError(f"{path} holds a {type(metadata).__name__}, not DCP metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """`DefaultLoadPlanner` that reads non-tensor values with `torch.load(weights_only=True)`."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as error:
            raise UnsafeCheckpointError(
                f"{self.source}: the value of {read_item.dest_index.fqn!r} holds objects that are not "
                f"tensors or plain containers; refusing to unpickle it ({error})"
            ) from error
        # Where the value goes, exactly as DefaultLoadPlanner.load_bytes places it.
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded
