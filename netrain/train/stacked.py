"""The stacked state of a packed group: each network's variables as one slice of stacked
variables, the stacked optimizer, and the networks' own values and keras models kept in step
with them (put back, copied for a rollback, held in a spare model while written)."""

from __future__ import annotations

import time
from typing import Any

from netrain.train.members import Member, kernel_cache_kept, seed_of


class StackedState:
    """The group's variables and optimizer, stacked [K, ...] over its K networks, and the
    group's keras model (``template``) whose structure they share."""

    def __init__(self, members: list[Member], keras: Any) -> None:
        import numpy as np

        self.keras, self.np = keras, np
        #: jax: the steps are pure functions of the state (jax.jit), which is read from and
        #: written back to the stacked variables around each call; tensorflow: tf.function
        #: steps that update the stacked variables themselves
        self.jax = keras.backend.backend() == "jax"
        self.tf: Any = None
        if not self.jax:
            import tensorflow as tf

            self.tf = tf
        self.members = members
        self.k = len(members)
        first = members[0]
        bs = first.job.config.batch_size or 32
        #: the group's keras model: the first network's own, else a spare one
        self.template = first.model if first.model is not None else self.spare(first)
        #: spare models that hold a network without a model of its own while its files
        #: are written: one for its weights file, whose optimizer stays unbuilt as the
        #: network's own would, and one for checkpoints (optimizer state included)
        self._spares: dict[str, Any] = {}
        # Build the compiled loss and metrics (and the optimizer) on the template.
        self.template._symbolic_build(data_batch=(first.x[:bs], first.y[:bs]))
        self.tvars = list(self.template.trainable_variables)
        self.ntvars = list(self.template.non_trainable_variables)
        self.mvars = list(self.template.metrics_variables)
        self.has_training_arg = bool(getattr(self.template, "_call_has_training_arg", False))
        for m in members:
            if len(m.values) != len(self.tvars) or len(m.nt_values) != len(self.ntvars):
                raise ValueError("the networks of the group have different variable counts")
        #: where each of model.weights is in (values, nt_values): get_weights' order
        where = {id(v): (0, i) for i, v in enumerate(self.tvars)}
        where.update({id(v): (1, i) for i, v in enumerate(self.ntvars)})
        self.weights_order = [where[id(w)] for w in self.template.weights]

        def stack(per: list[list[Any]]) -> list[Any]:
            return [np.stack([p[i] for p in per]) for i in range(len(per[0]))]

        self.svars = [keras.Variable(v, trainable=True, name=f"packed_{i}")
                      for i, v in enumerate(stack([m.values for m in members]))]
        tensor = keras.ops.convert_to_tensor
        #: the non-trainable values at the start (the steps carry them from step to step)
        self.ntv = [tensor(v) for v in stack([m.nt_values for m in members])]
        self.template.reset_metrics()
        self.mv_reset = [tensor(np.stack([keras.ops.convert_to_numpy(v)] * self.k))
                         for v in self.mvars]
        opt_t = first.optimizer
        self.optimizer = type(opt_t).from_config(opt_t.get_config())
        self.optimizer.build(self.svars)
        if any(m.job.resume is not None for m in members):
            self.stack_optimizers()
        lrs = [m.lr for m in members]
        #: each network's learning rate over the optimizer's, where they differ
        self.scale = None
        if all(lr is not None for lr in lrs) and len(set(lrs)) > 1:
            base = float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))
            self.scale = keras.ops.convert_to_tensor(
                np.asarray([lr / base for lr in lrs]), dtype=self.svars[0].dtype)  # type: ignore[operator]
        self._copy: Any = None

    def snapshot(self, ntv: list[Any]) -> tuple[Any, float]:
        """A copy of the stacked variables and optimizer state (one compiled call), and the
        seconds the copy took (its tracing, the first time, left out)."""
        if self.jax:  # jax arrays are never changed in place: keeping them is the copy
            return ([v.value for v in self.svars], [v.value for v in self.optimizer.variables],
                    list(ntv)), 0.0
        if self._copy is None:
            tf, opt_vars = self.tf, self.optimizer.variables
            self._copy = tf.function(
                lambda: ([tf.identity(v.value) for v in self.svars],
                         [tf.identity(v.value) for v in opt_vars]), autograph=False)
            self._copy.get_concrete_function()
        start = time.perf_counter()
        tv, ov = self._copy()
        return (list(tv), list(ov), list(ntv)), time.perf_counter() - start

    def restore(self, snapshot: tuple[list[Any], list[Any], list[Any]]) -> list[Any]:
        tv, ov, ntv = snapshot
        for var, val in zip(self.svars, tv, strict=True):
            var.assign(val)
        for var, val in zip(self.optimizer.variables, ov, strict=True):
            var.assign(val)
        return ntv

    def optimizer_pairs(self, model: Any) -> list[tuple[Any, Any, bool]]:
        """(stacked optimizer variable, the network's own, whether stacked) for the state a
        checkpoint keeps: the per-variable slots (sliced) and the step count (shared); the
        network's learning rate stays its own. ``model``: the network's keras model."""
        opt = model.optimizer
        if not opt.built:
            opt.build(model.trainable_variables)
        ours, theirs = self.optimizer.variables, opt.variables
        if len(ours) != len(theirs):
            raise ValueError(f"the packed optimizer has {len(ours)} variables, the network's "
                             f"{len(theirs)}")
        pairs = []
        for g, v in zip(ours, theirs, strict=True):
            if tuple(g.shape) == (self.k, *tuple(v.shape)):
                pairs.append((g, v, True))
            elif g is self.optimizer.iterations:
                pairs.append((g, v, False))
        return pairs

    def stack_optimizers(self) -> None:
        """Resumed networks: their optimizers' state (from the checkpoints) stacked."""
        keras, np = self.keras, self.np
        per = [self.optimizer_pairs(m.model) for m in self.members]
        for j, (g, _, stacked) in enumerate(per[0]):
            values = [keras.ops.convert_to_numpy(p[j][1]) for p in per]
            g.assign(np.stack(values) if stacked else values[0])

    def put_back(self, ntv: list[Any], which: list[int], optimizer: bool = False) -> None:
        """Put networks' current stacked values back into their own values (and keras
        models, where they have one; with ``optimizer``, the optimizer state into their
        own optimizers too)."""
        if not which:
            return
        np, numpy = self.np, self.keras.ops.convert_to_numpy
        tv_np = [numpy(v) for v in self.svars]
        ntv_np = [numpy(v) for v in ntv]
        opt_state = self.optimizer_state() if optimizer else None
        for i in which:
            m = self.members[i]
            m.values = [np.array(val[i]) for val in tv_np]
            m.nt_values = [np.array(val[i]) for val in ntv_np]
            if m.model is None:
                continue
            for var, val in zip(m.model.trainable_variables, m.values, strict=True):
                var.assign(val)
            for var, val in zip(m.model.non_trainable_variables, m.nt_values, strict=True):
                var.assign(val)
            if opt_state is not None:
                self.put_optimizer(m.model, i, opt_state)

    def optimizer_state(self) -> tuple[list[Any], dict[int, int]]:
        """The stacked optimizer's values, and each variable's place among them."""
        numpy = self.keras.ops.convert_to_numpy
        return ([numpy(v) for v in self.optimizer.variables],
                {id(v): j for j, v in enumerate(self.optimizer.variables)})

    def put_optimizer(self, model: Any, i: int, state: tuple[list[Any], dict[int, int]]
                       ) -> None:
        """Network ``i``'s slice of the stacked optimizer state into ``model``'s optimizer."""
        values, index = state
        for g, v, stacked in self.optimizer_pairs(model):
            val = values[index[id(g)]]
            v.assign(val[i] if stacked else val)

    def holding(self, m: Member, checkpoint: bool = False) -> Any:
        """A keras model that holds network ``m``'s values: its own, else one of the group's
        spare models (its learning rate set to the network's; for a ``checkpoint`` the
        caller puts the optimizer state in)."""
        if m.model is not None:
            return m.model
        role = "checkpoint" if checkpoint else "weights"
        if role not in self._spares:
            self._spares[role] = self.spare(m)
        model = self._spares[role]
        for var, val in zip(model.trainable_variables, m.values, strict=True):
            var.assign(val)
        for var, val in zip(model.non_trainable_variables, m.nt_values, strict=True):
            var.assign(val)
        if m.lr is not None:
            model.optimizer.learning_rate = m.lr
        return model

    def spare(self, m: Member) -> Any:
        """A keras model of the group's structure, compiled as network ``m``'s own would be
        (its layers named as the first network's; its values are not anyone's). Python's
        and numpy's random generators are left as they were."""
        import random

        keras, np, cfg = self.keras, self.np, m.job.config
        states = random.getstate(), np.random.get_state()
        try:
            with kernel_cache_kept(keras):  # its values are replaced: no stream matters
                keras.backend.clear_session(free_memory=False)
                keras.utils.set_random_seed(seed_of(m.job))
            model = cfg.model_generator()
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
        if not model.built:
            model(m.x[:1])
        opt = m.optimizer
        model.compile(optimizer=type(opt).from_config(opt.get_config()), loss=cfg.loss,
                      metrics=list(cfg.metrics) or None)
        return model


class NetworkWeights:
    """A network without a keras model of its own, as early stopping sees it: its weights
    (``get_weights``/``set_weights`` in the order of ``model.weights``, as a checkpoint keeps
    them), whether to stop, and the group model's metrics (whose direction "auto" reads)."""

    def __init__(self, state: StackedState, m: Member) -> None:
        self.state, self.m = state, m
        self.stop_training = False

    @property
    def metrics(self) -> list[Any]:
        return list(self.state.template.metrics)

    def get_weights(self) -> list[Any]:
        import numpy as np

        lists = (self.m.values, self.m.nt_values)
        return [np.array(lists[a][i]) for a, i in self.state.weights_order]

    def set_weights(self, weights: list[Any]) -> None:
        import numpy as np

        lists = (self.m.values, self.m.nt_values)
        for (a, i), w in zip(self.state.weights_order, weights, strict=True):
            lists[a][i] = np.asarray(w)
