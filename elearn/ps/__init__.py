"""PS mode: parameter-server and worker Spark jobs that meet in ZooKeeper; the driver coordinates."""
