"""What runs in the driver's process (``pl_submit``'s, or a notebook's): one application's
resources and teardown, the options, the SparkSession and what elearn does with it, the node jobs,
shipping code and environments, and what operators see (console, summary, list/status/kill)."""
