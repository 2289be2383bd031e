"""The engine: for run in runs: for batch in scenario: train → evaluate → log → checkpoint.

* :mod:`.minibatches` – padding, shuffling and iterations of a batch (spec §5.2-5.3);
* :mod:`.loop` – the batch loop every trainer runs on (metrics after each batch, checkpoints, early stop);
* :mod:`.run` – :class:`~.run.RunTrainer`, one run: a batch, the method's hooks;
* :mod:`.checkpoints` – a run's checkpoint, saved, loaded and refused when trained otherwise;
* :mod:`.evaluation` – evaluation and the test-latent cache (a part of the run trainer);
* :mod:`.memory_update` – what the replay memory learns from a batch (a part of the run trainer);
* :mod:`.experiment` – :class:`~.experiment.Trainer`, one experiment's runs and the results it keeps.

:mod:`latent_replay.train` gathers their public names.
"""
