"""Logistic regression with a hand-written training loop on a parameter-server cluster.

    pl_submit examples/custom_loop/logistic_loop.py --ps 1 --workers 2

Spark makes 20,000 rows whose labels are drawn from planted weights; ``train`` schedules each
step on the workers itself (``ctx.coordinator.schedule``) instead of calling ``fit``, checkpoints
with ``ctx.checkpoint`` and reports its loss with ``ctx.report``. The learned weights come out
close to the planted ones. See README.md in this directory.

Job arguments (``--arg KEY=VALUE``): rows (20000), steps (400), batch_size (256 rows per step),
lr (0.05, halved every 100 steps), every (100: steps between checkpoints and reports).
"""
import tensorflow as tf
from pyspark.sql import functions as F

from elearn import SparkTFJob

TRUE_W = [1.5, -2.0, 1.0, -0.75]
TRUE_B = -0.5
FEATURES = [f"x{i}" for i in range(len(TRUE_W))]


class Logistic(tf.Module):
    """P(label = 1 | x) = sigmoid(x . w + b). Calling it (the exported ``serving_default``)
    gives the probability for a batch ``x`` of shape [batch, features]."""

    def __init__(self, n: int):
        super().__init__()
        self.w = tf.Variable(tf.zeros([n]), name="w")
        self.b = tf.Variable(0.0, name="b")

    def logits(self, x):
        return tf.linalg.matvec(x, self.w) + self.b

    @tf.function(input_signature=[tf.TensorSpec([None, len(FEATURES)], tf.float32, name="x")])
    def __call__(self, x):
        return tf.sigmoid(self.logits(x))


class LogisticLoop(SparkTFJob):
    def pre_train(self, spark):
        df = spark.range(int(self.args.get("rows", 20000)), numPartitions=4)
        for i, f in enumerate(FEATURES):
            df = df.withColumn(f, F.randn(seed=i).cast("float"))
        logit = sum(F.col(f) * w for f, w in zip(FEATURES, TRUE_W)) + TRUE_B
        # Each label is a coin flip with the planted probability, so the weights are learnable
        # only up to the noise of 20,000 flips (about 0.03 each).
        label = (F.rand(seed=99) < 1 / (1 + F.exp(-logit))).cast("float")
        return df.withColumn("label", label).drop("id")

    def train(self, ctx):
        a = self.args
        steps, every = int(a.get("steps", 400)), int(a.get("every", 100))
        with ctx.strategy.scope():                # variables on the parameter servers
            model = Logistic(len(FEATURES))
            # Large steps first, then smaller ones: the last weights stay close to the optimum
            # instead of jittering around it at the first step size.
            lr = ctx.keras.optimizers.schedules.ExponentialDecay(float(a.get("lr", 0.05)), 100, 0.5)
            optimizer = ctx.keras.optimizers.Adam(lr)
            # Adam's slots made here, under the strategy, rather than inside the first step.
            optimizer.build(model.trainable_variables)
        # Restored already: after a restart, the latest checkpoint's values and its step.
        ckpt = ctx.checkpoint(model=model, optimizer=optimizer, every_steps=every)

        @tf.function
        def train_step(iterator):
            def replica(features, label):
                x = tf.stack([features[f] for f in FEATURES], axis=1)
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
                        labels=label, logits=model.logits(x)))
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))
                return loss
            return ctx.strategy.run(replica, args=next(iterator))

        # One dataset per worker, each reading the rows spooled on that worker.
        dataset = ctx.coordinator.create_per_worker_dataset(
            ctx.dataset_fn(label="label", batch_size=int(a.get("batch_size", 256))))
        iterator = iter(dataset)
        for step in range(ckpt.step, steps):
            # Scheduled steps run asynchronously on whichever worker is free.
            loss = ctx.coordinator.schedule(train_step, args=(iterator,))
            if (step + 1) % every == 0 or step + 1 == steps:
                ctx.coordinator.join()            # every scheduled step done
                ckpt.maybe_save(step + 1)
                ctx.report(step=step + 1, loss=float(loss.fetch()))
        if ckpt.step < steps:
            ckpt.save(steps)
        if ctx.is_chief:
            print("learned weights", [round(float(w), 3) for w in model.w.numpy()],
                  "bias", round(float(model.b.numpy()), 3))
            print("planted weights", TRUE_W, "bias", TRUE_B)
        return model
