"""The DataFrame's way into TensorFlow: planning and dealing exact shares (the driver, Spark's map
tasks), the spool format and its writer (a worker node's Spark task) and the native reader (TF)."""
