"""What runs in a node's Spark task: the node's life (``node_task``), its TF server process and the
GPUs it may see."""
