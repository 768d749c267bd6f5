"""``pl_submit``: the command line of elearn."""
