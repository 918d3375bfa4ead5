"""Watching the torch storages that ops create, for measurements of what is alive at once.

Used by tests/models/test_memory.py (the most tensors of given shapes alive together) and by
benchmarks/memory_parts.py (the most bytes alive together).
"""

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class NewStorages(TorchDispatchMode):
    """A dispatch mode calling `on_new(key, tensor, nbytes)` once for each non-empty storage an
    op returns that is not alive already, and `on_free(key)` when that storage is freed.

    Args:
        on_new: called with the storage's address, the tensor returned, its storage's bytes.
        on_free: called with the address when the storage is freed.
        ignore: addresses never reported (e.g. storages that existed before).
    """

    def __init__(self, on_new, on_free=None, ignore=()):
        super().__init__()
        self.on_new, self.on_free, self.ignore = on_new, on_free, set(ignore)
        self.alive = set()

    def _freed(self, key):
        self.alive.discard(key)
        if self.on_free is not None:
            self.on_free(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key in self.ignore or key in self.alive or not storage.nbytes():
                continue
            self.alive.add(key)
            weakref.finalize(storage, self._freed, key)
            self.on_new(key, tensor, storage.nbytes())
        return out
