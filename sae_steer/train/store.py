"""The activation store: harvest once, train over it for several epochs.

Activations are kept in memory up to a byte budget; past it (when allowed) they spill to
an append-only file on disk that is read back through ``numpy.memmap`` and removed by
``close()``. Each epoch visits the whole store in a fresh permutation drawn from one
seeded CPU generator, so the batches are the same on every run, in memory or on disk
(each batch gathers its rows in sorted order, the same way in both places).

``EpochBatches`` is what the training loop iterates: optionally one streamed first pass
(recorded into the store as it goes, the pre-store behaviour), then epochs of the store;
its ``epoch`` attribute (1-based) is what the progress bar shows.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sae_steer.fsutil import cache_dir

GiB = 1024 ** 3


class ActivationStore:
    """Rows ``[n, d_in]`` appended chunk by chunk, then read in shuffled batches.

    ``spill=True``: past ``budget_bytes`` in memory, everything goes to a file under
    ``directory`` (default ``cache_dir()/activation_stores``). ``spill=False``: past the
    budget the store gives up (``dropped`` is set, memory freed, later rows ignored).
    """

    def __init__(self, d_in: int, *, budget_bytes: int = 2 * GiB, spill: bool = True,
                 directory: str | Path | None = None):
        self.d_in, self.budget_bytes, self.spill = d_in, budget_bytes, spill
        self._root = Path(directory) if directory is not None else cache_dir() / "activation_stores"
        self._chunks: list[Tensor] = []
        self._rows: Tensor | None = None
        self._file = None
        self._dir: Path | None = None
        self._map: np.memmap | None = None
        self.n_rows = 0
        self.dropped = False
        self.spilled = False
        """Whether the rows went to disk (stays True after ``close``)."""

    def __len__(self) -> int:
        return self.n_rows

    @property
    def on_disk(self) -> bool:
        return self._dir is not None

    @property
    def path(self) -> Path | None:
        """The memory-mapped file (None while the store is in memory)."""
        return self._dir / "activations.f32" if self._dir is not None else None

    def append(self, rows: Tensor) -> None:
        if self.dropped or len(rows) == 0:
            return
        rows = rows.detach().to("cpu", torch.float32).contiguous()
        if rows.shape[-1] != self.d_in:
            raise ValueError(f"store holds rows of width {self.d_in}, got {tuple(rows.shape)}")
        if self._file is None and (self.n_rows + len(rows)) * self.d_in * 4 > self.budget_bytes:
            if not self.spill:
                self.dropped, self._chunks = True, []
                return
            self._open_file()
        if self._file is not None:
            self._file.write(rows.numpy().tobytes())
        else:
            self._chunks.append(rows)
        self.n_rows += len(rows)

    def _open_file(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="store-", dir=self._root))
        self.spilled = True
        self._file = open(self.path, "wb")  # noqa: SIM115 (closed in finish/close)
        for chunk in self._chunks:
            self._file.write(chunk.numpy().tobytes())
        self._chunks = []

    def finish(self) -> None:
        """No more rows: make the store readable (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._map = np.memmap(self.path, dtype=np.float32, mode="r",
                                  shape=(self.n_rows, self.d_in))
        elif self._chunks:
            self._rows = torch.cat(self._chunks)
            self._chunks = []

    def rows(self, index: Tensor) -> Tensor:
        """Rows at ``index`` (sorted, for disk locality), as a float32 CPU tensor."""
        index = index.sort().values
        if self._map is not None:
            return torch.from_numpy(np.ascontiguousarray(self._map[index.numpy()]))
        if self._rows is None:
            raise ValueError("the store is empty or not finished")
        return self._rows.index_select(0, index)

    def epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
        """One pass over the whole store in a fresh permutation; the last partial batch
        is left out (a different one each epoch)."""
        order = torch.randperm(self.n_rows, generator=generator)
        for start in range(0, self.n_rows - batch_size + 1, batch_size):
            yield self.rows(order[start:start + batch_size])

    def close(self) -> None:
        """Free memory and remove the file on disk (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._map, self._rows, self._chunks = None, None, []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def recorded(chunks: Iterable[Tensor], store: ActivationStore) -> Iterator[Tensor]:
    """``chunks`` unchanged, each appended to ``store`` on its way through."""
    for chunk in chunks:
        store.append(chunk)
        yield chunk


class EpochBatches:
    """Training batches: ``first_pass`` (if given, epoch 1), then epochs of ``store``.

    With ``epochs=None`` the epochs go on until the consumer stops (the loop stops at
    ``n_steps``); otherwise exactly ``epochs`` epochs of the store (``first_pass`` counts as
    the first). A store that ``dropped`` its rows gives no further epochs.
    """

    def __init__(self, store: ActivationStore, batch_size: int, seed: int, *,
                 first_pass: Iterable[Tensor] | None = None, epochs: int | None = None):
        self.store, self.batch_size, self.epochs = store, batch_size, epochs
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 1
        """The epoch of the batch ``next`` returned last (1-based)."""
        self._batches = self._all(first_pass)

    def __iter__(self) -> EpochBatches:
        return self

    def __next__(self) -> Tensor:
        return next(self._batches)

    def _all(self, first_pass: Iterable[Tensor] | None) -> Iterator[Tensor]:
        epoch = 1
        if first_pass is not None:
            yield from first_pass
            epoch += 1
        self.store.finish()
        while (not self.store.dropped and len(self.store) >= self.batch_size
               and (self.epochs is None or epoch <= self.epochs)):
            for batch in self.store.epoch(self.batch_size, self.generator):
                self.epoch = epoch
                yield batch
            epoch += 1
