"""Where checkpoints, models, events and logs live, from any process: locations and the one storage
API over them (local paths, ``file://`` mounts, object stores, HDFS), atomic local files, the
driver's file service for nodes on other hosts, mount marks and mirrors of growing files."""
