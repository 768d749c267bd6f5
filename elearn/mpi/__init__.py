"""Allreduce mode ("MPI architecture"): one barrier stage, MultiWorkerMirroredStrategy in every worker."""
