"""The engine: for run in runs: for batch in scenario: train → evaluate → log → checkpoint.

* :mod:`.minibatches` – padding, shuffling and iterations of a batch (spec §5.2-5.3);
* :mod:`.run` – :class:`~.run.RunTrainer`, one run: the batch loop, the method's hooks, checkpoints;
* :mod:`.evaluation` – evaluation and the test-latent cache (a part of the run trainer);
* :mod:`.memory_update` – what the replay memory learns from a batch (a part of the run trainer);
* :mod:`.experiment` – :class:`~.experiment.Trainer`, one experiment's runs and the results it keeps.

:mod:`latent_replay.train` gathers their public names.
"""
