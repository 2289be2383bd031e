"""The run trainer's evaluation (spec §8.1): accuracy on the test list, with the test latents cached
once the part below the split is frozen (in memory, or on the CPU in a :class:`RowFile`)."""
from __future__ import annotations

import itertools
import logging

import numpy as np
import torch

from ..rowfile import RowFile
from .minibatches import hits

log = logging.getLogger("latent_replay.train")
#: Test-set latents are cached only below this size.
TEST_CACHE_LIMIT_BYTES = 2 * 1024 ** 3


class TestEvaluation:
    """Part of :class:`~latent_replay.engine.run.RunTrainer`: evaluation and the test-latent cache."""

    @torch.inference_mode()
    def evaluate(self) -> float:
        self.model.eval()
        use_cache = self.cfg.cache_test_latents and self.lower_frozen_eval
        correct, ties = 0, self.fid.count_ties_as_miss
        if use_cache:
            self._ensure_test_cache()
        cached = use_cache and self.test_cache is not None
        frames = None if cached else self.test_frames
        # the upper part alone on cached latents has small activations: training-minibatch-sized chunks
        # run as fast as larger ones and reuse the training iterations' freed blocks (measured)
        chunk = max(self.cfg.test_minibatch, self.cfg.minibatch) if cached else self.chunk
        starts = range(0, len(self.test_labels), chunk)
        if cached:
            latents = (self.test_cache.chunks(chunk) if isinstance(self.test_cache, RowFile)
                       else self.test_cache.split(chunk))
            outputs = (self.upper(h) for h in latents)
        else:
            outputs = (self.model(self._pre(frames[i:i + chunk])) for i in starts)
        for i, logits in zip(starts, outputs):
            correct += hits(logits, self.test_labels[i:i + chunk], ties).sum()   # read once, at the end
        return int(correct) / len(self.test_labels)

    @property
    def _test_cache_due(self) -> bool:
        """Whether the test latents are to be cached now (switch on, lower part frozen, not cached yet)."""
        return self.test_cache is None and self.cfg.cache_test_latents and self.lower_frozen_eval

    def _ensure_test_cache(self) -> None:
        """Cache the test latents (lower part, eval mode) once, if they fit in TEST_CACHE_LIMIT_BYTES.
        Called while the lower part is frozen: at the start of the first incremental batch (when the
        heap holds the least, so the one-time pass does not stack on the batch's working set) or at
        the first evaluation after a resume."""
        if not self._test_cache_due:
            return
        if self._latent_bytes(self.split_layer) * len(self.test_labels) <= TEST_CACHE_LIMIT_BYTES:
            self.model.eval()
            frames = self.test_frames
            if self.cfg.test_latents_in_file and self.device.type == "cpu":
                self.test_cache = self._test_latents_file(frames)
            if self.test_cache is None:
                self.test_cache = self._lower_pass(self.lower, frames)
            self._test_frames = None   # a GPU's copy is not needed while the cache lasts (read again if dropped)
            self._release()   # once: the whole test list went through the lower part

    def _test_latents_file(self, frames: torch.Tensor) -> RowFile | None:
        """The lower part's latents of ``frames`` written to a :class:`RowFile` in the frame cache's
        folder, else in the run folder (where the file cannot be made or its size reserved: read-only,
        full); None, with a warning, where neither can take it or a write fails: the latents are then
        kept in memory."""
        chunks = self._lower_chunks(self.lower, frames)
        first = next(chunks, None)
        if first is None:
            return None
        scratch = getattr(self.stream, "scratch_folder", None)
        rows = None
        for folder in ([scratch] if scratch is not None else []) + [self.dir]:
            try:
                rows = RowFile(len(frames), first[1], folder)
                break
            except OSError as exc:
                log.warning("test latents: no temporary file in %s (%s)", folder, exc)
        if rows is None:
            return None
        try:
            for _, y in itertools.chain([first], chunks):
                rows.append(y)
        except OSError as exc:
            log.warning("test latents: writing them to a file failed (%s); keeping them in memory", exc)
            rows.close()
            return None
        return rows

    def _drop_test_cache(self) -> None:
        if isinstance(self.test_cache, RowFile):
            self.test_cache.close()
        self.test_cache = None

    def _latent_bytes(self, layer: str) -> int:
        from ..models import latent_shape

        return 4 * int(np.prod(latent_shape(layer, int(self.stream.input_shape[0]))))
