"""The compiled steps that advance a packed group, one per backend: TensorFlow's
(``tf.function``, updating the stacked variables in place) and JAX's twin (``jax.jit``, a pure
function of the state); with the group's data, gathered or stacked for each step."""

from __future__ import annotations

from typing import Any

from netrain.train.stacked import StackedState


class Steps:
    """One training step, one validation step and the metrics' results of the group whose
    stacked ``state`` they advance, each vectorized over its networks (``keras.ops.
    vectorized_map`` over the template's ``stateless_call``)."""

    def __init__(self, state: StackedState) -> None:
        self.state = state
        self.keras, self.np, self.jax, self.tf = state.keras, state.np, state.jax, state.tf
        members = state.members
        first = members[0]
        bs = first.job.config.batch_size or 32
        #: training / validation batches drawn from each network's source (batches.py)
        #: and stacked per step, else gathered from the stacked (x, y) arrays
        self.stream, self.vstream = first.src is not None, first.vsrc is not None
        if not self.stream:
            self.x, self.x_shared = self._data([m.x for m in members])
            self.y, self.y_shared = self._data([m.y for m in members])
        self.has_val = first.xv is not None
        if self.has_val and not self.vstream:
            self.xv, self.xv_shared = self._data([m.xv for m in members])
            self.yv, self.yv_shared = self._data([m.yv for m in members])
        self.n = int(first.x.shape[0])
        self.nv = int(first.xv.shape[0]) if self.has_val else 0
        #: keras batches validation arrays by fit's batch_size, which a source does not give
        self.vbs = 32 if self.stream else bs
        if self.jax:
            import jax

            self._jit_train = jax.jit(self._train_step_jax)
            self._jit_test = jax.jit(self._test_step_jax)
            self.results = jax.jit(self._results)
            return
        tf = self.tf
        # No autograph (nothing here branches on tensors; converting costs seconds) and no
        # XLA (jit_compile made a vectorized step ~300x slower on CPU).
        self.train_step = tf.function(self._train_step, reduce_retracing=True, autograph=False)
        self.test_step = tf.function(self._test_step, reduce_retracing=True, autograph=False)
        self.results = tf.function(self._results, autograph=False)

    def _data(self, arrays: list[Any]) -> tuple[Any, bool]:
        """One copy when every network has the same array, else a stacked [K, n, ...]."""
        np, tensor = self.np, self.keras.ops.convert_to_tensor
        first = arrays[0]
        if all(a is first or np.array_equal(a, first) for a in arrays[1:]):
            return tensor(first), True
        return tensor(np.stack(arrays)), False

    def _inputs(self, data: Any, val: bool) -> tuple[Any, Any]:
        """The step's [K, batch, ...] x and y: given stacked (from the sources), or gathered
        (``data`` is then the rows of each network's arrays)."""
        if self.vstream if val else self.stream:
            return data[0], data[1]
        if val:
            return (self._gather(self.xv, self.xv_shared, data),
                    self._gather(self.yv, self.yv_shared, data))
        return (self._gather(self.x, self.x_shared, data),
                self._gather(self.y, self.y_shared, data))

    def _gather(self, data: Any, shared: bool, idx: Any) -> Any:
        """Rows ``idx[k]`` of network k's data: [K, batch, ...]."""
        if self.jax:
            import jax

            if shared:
                return data[idx]
            return jax.vmap(lambda d, i: d[i])(data, idx)
        if shared:
            return self.tf.gather(data, idx)
        return self.tf.gather(data, idx, batch_dims=1)

    # -- per network (traced once, vectorized over the K networks)

    def _forward(self, tv: Any, ntv: Any, mv: Any, x: Any, y: Any, training: bool) -> Any:
        t = self.state.template
        kwargs = {"training": training} if self.state.has_training_arg else {}
        y_pred, ntv, losses = t.stateless_call(tv, ntv, x, return_losses=True, **kwargs)
        t._losses_override = list(losses) if losses else []
        try:
            loss, (_, ntv, mv) = t.stateless_compute_loss(
                tv, ntv, mv, x=x, y=y, y_pred=y_pred, sample_weight=None, training=training)
        finally:
            t._losses_override = []
        mv = self._update_metrics(mv, loss, x, y, y_pred)
        return loss, ntv, mv

    def _update_metrics(self, mv: Any, loss: Any, x: Any, y: Any, y_pred: Any) -> list[Any]:
        t = self.state.template
        mapping = list(zip(self.state.mvars, mv, strict=True))
        with self.keras.StatelessScope(state_mapping=mapping) as scope:
            # the batch size as a value: a retraced step (a last, shorter batch) has no
            # static one, and keras weighs each batch by its size
            t._loss_tracker.update_state(loss, sample_weight=self.keras.ops.shape(x)[0])
            t.compute_metrics(x, y, y_pred, sample_weight=None)
        out = []
        for ref, old in zip(self.state.mvars, mv, strict=True):
            new = scope.get_current_value(ref)
            out.append(old if new is None else new)
        return out

    # -- stacked steps

    def _train_step(self, ntv: list[Any], mv: list[Any], active: Any, data: Any) -> Any:
        tf, keras = self.tf, self.keras
        xb, yb = self._inputs(data, val=False)
        tv = [tf.convert_to_tensor(v.value) for v in self.state.svars]

        def one(args: Any) -> Any:
            tv_k, ntv_k, mv_k, x_k, y_k = args
            return self._forward(tv_k, ntv_k, mv_k, x_k, y_k, training=True)

        with tf.GradientTape() as tape:
            tape.watch(tv)
            losses, new_ntv, new_mv = keras.ops.vectorized_map(one, (tv, ntv, mv, xb, yb))
            total = tf.reduce_sum(losses)
        grads = tape.gradient(total, tv)
        missing = sum(1 for g in grads if g is None)
        if missing or len(grads) != len(self.state.tvars):
            raise ValueError(f"the vectorized step updates {len(grads) - missing} of the model's "
                             f"{len(self.state.tvars)} trainable variables")
        self.state.optimizer.apply(grads, self.state.svars)
        for var, old in zip(self.state.svars, tv, strict=True):
            new = tf.convert_to_tensor(var.value)
            if self.state.scale is not None:
                new = old + (new - old) * self.per_net(self.state.scale, old)
            var.assign(tf.where(self.per_net(active, old), new, old))
        # a network out of batches this step (its source ended) keeps its state and metrics
        return self._keep(active, new_ntv, ntv), self._keep(active, new_mv, mv)

    def _keep(self, active: Any, new: list[Any], old: list[Any]) -> list[Any]:
        where = self.keras.ops.where
        return [where(self.per_net(active, o), n, o) for n, o in zip(new, old, strict=True)]

    def _test_step(self, ntv: list[Any], mv: list[Any], active: Any, data: Any) -> Any:
        tf = self.tf
        xb, yb = self._inputs(data, val=True)
        tv = [tf.convert_to_tensor(v.value) for v in self.state.svars]

        def one(args: Any) -> Any:
            tv_k, ntv_k, mv_k, x_k, y_k = args
            return self._forward(tv_k, ntv_k, mv_k, x_k, y_k, training=False)[2]

        return self._keep(active, self.keras.ops.vectorized_map(one, (tv, ntv, mv, xb, yb)), mv)

    def _train_step_jax(self, tv: list[Any], ov: list[Any], ntv: list[Any], mv: list[Any],
                        active: Any, data: Any) -> Any:
        """The jax twin of _train_step, a pure function: the new (tv, ov, ntv, mv)."""
        import jax
        import jax.numpy as jnp

        xb, yb = self._inputs(data, val=False)

        def total(tv: list[Any]) -> Any:
            def one(args: Any) -> Any:
                tv_k, ntv_k, mv_k, x_k, y_k = args
                return self._forward(tv_k, ntv_k, mv_k, x_k, y_k, training=True)

            losses, new_ntv, new_mv = self.keras.ops.vectorized_map(one, (tv, ntv, mv, xb, yb))
            return jnp.sum(losses), (new_ntv, new_mv)

        # every stacked variable gets a gradient here (zero where none reaches it, as in
        # keras' own jax trainer): tensorflow's missing-gradient guard has no twin
        (_, (new_ntv, new_mv)), grads = jax.value_and_grad(total, has_aux=True)(tv)
        new_tv, new_ov = self.state.optimizer.stateless_apply(ov, grads, tv)
        out = []
        for new, old in zip(new_tv, tv, strict=True):
            if self.state.scale is not None:
                new = old + (new - old) * self.per_net(self.state.scale, old)
            out.append(jnp.where(self.per_net(active, old), new, old))
        return out, list(new_ov), self._keep(active, new_ntv, ntv), self._keep(active, new_mv, mv)

    def _test_step_jax(self, tv: list[Any], ntv: list[Any], mv: list[Any], active: Any,
                       data: Any) -> Any:
        xb, yb = self._inputs(data, val=True)

        def one(args: Any) -> Any:
            tv_k, ntv_k, mv_k, x_k, y_k = args
            return self._forward(tv_k, ntv_k, mv_k, x_k, y_k, training=False)[2]

        return self._keep(active, self.keras.ops.vectorized_map(one, (tv, ntv, mv, xb, yb)), mv)

    def step(self, ntv: list[Any], mv: list[Any], active: Any, data: Any) -> Any:
        """One training step of the group: the new (ntv, mv); the stacked variables and
        the optimizer's hold the new weights and state."""
        if not self.jax:
            return self.train_step(ntv, mv, active, data)
        opt_vars = self.state.optimizer.variables
        tv, ov, ntv, mv = self._jit_train([v.value for v in self.state.svars],
                                          [v.value for v in opt_vars], ntv, mv, active, data)
        for var, val in zip(self.state.svars, tv, strict=True):
            var.assign(val)
        for var, val in zip(opt_vars, ov, strict=True):
            var.assign(val)
        return ntv, mv

    def evaluate(self, ntv: list[Any], mv: list[Any], active: Any, data: Any) -> Any:
        if not self.jax:
            return self.test_step(ntv, mv, active, data)
        return self._jit_test([v.value for v in self.state.svars], ntv, mv, active, data)

    def _results(self, mv: list[Any]) -> dict[str, Any]:
        def one(mv_k: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            mapping = list(zip(self.state.mvars, mv_k, strict=True))
            with self.keras.StatelessScope(state_mapping=mapping):
                for metric in self.state.template.metrics:
                    r = metric.result()
                    if isinstance(r, dict):
                        out.update(r)
                    else:
                        out[metric.name] = r
            return out

        return self.keras.ops.vectorized_map(one, mv)

    def per_net(self, v: Any, like: Any) -> Any:
        """A [K] vector shaped to broadcast against a stacked [K, ...] value."""
        return self.keras.ops.reshape(v, [-1] + [1] * (len(like.shape) - 1))

    # -- the epochs
