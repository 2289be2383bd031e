"""The run trainer's memory update after a batch (spec §7.2): the candidates it offers the replay
(:class:`~latent_replay.replay.ExperienceData`) and their latents at the memory layer, as the fidelity
switches say (B11: eval mode with the final weights, or the training-mode activations of epoch 0)."""
from __future__ import annotations

import numpy as np
import torch

from ..replay import ExperienceData


class MemoryUpdates:
    """Part of :class:`~latent_replay.engine.run.RunTrainer`: what the replay memory learns from a batch."""

    @torch.no_grad()
    def _update_memory(self, b, sched, new_frames, new_labels, feats, epoch0) -> None:
        cfg, fid = self.cfg, self.fid
        # candidates are positions in the batch; the epoch-0 latents (B11) come in the order the first
        # epoch visited the patterns, so with them the candidates follow that order, padded or not
        epoch0_order = cfg.uses_latent and fid.stored_latents == "train_epoch0"
        cand = sched.new_order if fid.pad_training_like_caffe or epoch0_order else np.arange(len(new_labels))

        def rows(pick: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(cand[pick], device=self.device)

        data = ExperienceData(b, len(cand), labels=lambda pick: new_labels[rows(pick)],
                              frames=lambda pick: new_frames[rows(pick)],
                              latents=lambda pick: self._memory_latents(b, sched, new_frames, feats, epoch0, cand, pick))
        self.memory.after_experience(self._rng(), data)

    def _memory_latents(self, b, sched, new_frames, feats, epoch0, cand, pick) -> torch.Tensor:
        """Latents at the memory layer of the candidates ``cand[pick]`` (B11 decides which)."""
        rows = torch.as_tensor(cand[pick], device=self.device)
        if self.fid.stored_latents == "train_epoch0":
            return self._epoch0_latents(b, sched, new_frames, epoch0)[torch.as_tensor(pick, device=self.device)]
        if feats is not None and self.memory_layer == self.split_layer:
            return feats[rows]
        return self._eval_latents(new_frames[rows])

    def _eval_latents(self, frames_u8: torch.Tensor) -> torch.Tensor:
        """Latents at the memory layer in eval mode with the current weights (B11 fixed)."""
        self.model.eval()
        return self._lower_pass(self.mem_lower, frames_u8)

    def _epoch0_latents(self, b, sched, new_frames, epoch0) -> torch.Tensor:
        """Latents of every padded position, as the original stores them (B11)."""
        if b > 0:
            chunks = []
            for j in range(sched.new_chunks):   # chunks the first epoch did not reach: lower pass now
                start = j * sched.k_new
                if start not in epoch0:
                    rows = torch.as_tensor(sched.new_order[start:start + sched.k_new], device=self.device)
                    epoch0[start] = self.lower(self._pre(new_frames[rows]))
                chunks.append(epoch0[start])
            return torch.cat(chunks)
        # batch 0: an extra training-mode pass of the whole network over the padded, shuffled batch, as
        # the original's net.forward(): it updates the moments of every BRN layer, above the memory
        # layer too; the latents are read at the memory layer
        self.model.train()
        k = self.cfg.minibatch
        order = torch.as_tensor(sched.new_order, device=self.device)
        chunks = []
        for i in range(0, len(order), k):
            chunks.append(self.mem_lower(self._pre(new_frames[order[i:i + k]])))
            self.mem_upper(chunks[-1])
        return torch.cat(chunks)
