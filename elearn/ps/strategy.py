"""ParameterServerStrategy for the coordinator, from the cluster spec the driver published."""
from __future__ import annotations


def build_strategy(spec: dict, partitioner):
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(spec), task_type="chief", task_id=0, rpc_layer="grpc")
    strategy = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    return strategy, coordinator
