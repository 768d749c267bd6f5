"""What runs on the executors: the Arrow spool, the native reader, the node daemon and TF process."""
